// Message search: the query and the results panel.
import { get, qs } from "./api.js";
import { avatarEl, fmtTime, h } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, person, personAvatar, report, userName } from "./state.js";
import { channelLabel } from "./sidebar.js";
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
      else if (p) snip.appendChild(marked ? h("mark", { text: unescapeHtml(p) }) : document.createTextNode(unescapeHtml(p)));
    }
    body.appendChild(h("button", { type: "button", class: "search-hit", onclick: () => jump(m) },
      h("div", { class: "search-meta" }, avatarEl(m.agentId ? (S.agents.get(m.agentId) || {}).avatar || agentName(m.agentId)
        : personAvatar(person(m.userId) || { displayName: userName(m.userId) }), "avatar small"),
      h("span", { class: "who", text: m.agentId ? agentName(m.agentId) : userName(m.userId) }),
      h("span", { class: "chan", text: c ? channelLabel(c) : "" }),
        h("span", { class: "muted", text: fmtTime(m.createdAt) })),
      snip));
  }
  openPanel("search", t("search.resultsFor", { q }), body);
}

// The server's snippet is text escaped by Python's html.escape, with <mark> tags; it becomes text
// nodes here, so the five entities html.escape makes are turned back into their characters.
const ENTITIES = { "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#x27;": "'" };

function unescapeHtml(text) {
  return text.replace(/&(?:amp|lt|gt|quot|#x27);/g, (e) => ENTITIES[e]);
}
