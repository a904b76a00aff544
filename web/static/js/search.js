// Message search: the query and the results panel.
import { get, qs } from "./api.js";
import { fmtTime, h } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, report } from "./state.js";
import { openPanel } from "./ui.js";

export async function search(q) {
  if (!q.trim()) return;
  try {
    const r = await get(`/api/messages/search?${qs({ q })}`);
    showSearch(q, r.results || r.messages || [], (m) => {
      location.hash = `#/c/${encodeURIComponent(m.channelId)}/m/${encodeURIComponent(m.id)}`;
    });
  } catch (e) {
    report(e);
  }
}

export function showSearch(q, results, jump) {
  const body = h("div", { class: "search-results" });
  if (!results.length) body.appendChild(h("p", { class: "muted", text: t("search.none") }));
  for (const r of results) {
    const m = r.message || r;
    const c = S.channels.get(m.channelId);
    const snip = h("div", { class: "snippet" });
    // The server's snippet marks hits with <mark>/<b>; anything else is text.
    const parts = String(r.snippet || m.content || "").split(/(<\/?(?:mark|b)>)/);
    let marked = false;
    for (const p of parts) {
      if (/^<(mark|b)>$/.test(p)) marked = true;
      else if (/^<\/(mark|b)>$/.test(p)) marked = false;
      else if (p) snip.appendChild(marked ? h("mark", { text: p }) : document.createTextNode(p));
    }
    body.appendChild(h("button", { type: "button", class: "search-hit", onclick: () => jump(m) },
      h("div", { class: "search-meta" }, h("span", { class: "chan", text: c ? (c.type === "dm" ? agentName((c.agentIds || [])[0]) || c.name : c.name) : "" }),
        h("span", { class: "muted", text: fmtTime(m.createdAt) })),
      snip));
  }
  openPanel("search", t("search.resultsFor", { q }), body);
}
