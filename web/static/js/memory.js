// An agent's memory panel: search, filter, add, edit and delete memories.
import { del, get, post, put, qs } from "./api.js";
import { clear, fmtTime, h, roleAtLeast } from "./dom.js";
import { t } from "./i18n.js";
import { S, errorText, on, report } from "./state.js";
import { busy, closePanel, currentPanel, debounce, openPanel } from "./ui.js";

export async function openMemory(agent) {
  if (!agent) return;
  const body = h("div", { class: "memory" });
  const q = h("input", { type: "search", placeholder: t("memory.search"), id: "memory-q" });
  const cls = h("select", { id: "memory-class" }, ["", "semantic", "episodic", "procedural"].map((c) =>
    h("option", { value: c, text: c ? t(`memory.${c}`) : t("memory.all") })));
  const listEl = h("div", { class: "memory-list" });
  const base = `/api/agents/${encodeURIComponent(agent.id)}/memories`;
  const load = async () => {
    try {
      const r = await get(`${base}?${qs({ q: q.value, class: cls.value })}`);
      clear(listEl);
      const items = r.memories || [];
      if (!items.length) listEl.appendChild(h("p", { class: "muted", text: t("memory.none") }));
      for (const m of items) listEl.appendChild(memoryItem(m, base, load));
    } catch (e) {
      clear(listEl).appendChild(h("p", { class: "error", text: errorText(e) }));
    }
  };
  const newText = h("textarea", { rows: "2", placeholder: t("memory.newPlaceholder"), id: "memory-new" });
  const newCls = h("select", {}, ["semantic", "episodic", "procedural"].map((c) => h("option", { value: c, text: t(`memory.${c}`) })));
  const add = h("button", { type: "button", class: "primary", text: t("memory.add") });
  const newShared = h("input", { type: "checkbox", id: "memory-new-shared" });
  add.addEventListener("click", busy(add, async () => {
    if (!newText.value.trim()) return;
    await post(base, { content: newText.value.trim(), class: newCls.value, scope: newShared.checked ? "shared" : "private" });
    newText.value = "";
    await load();
  }));
  q.addEventListener("input", debounce(load, 250));
  cls.addEventListener("change", load);
  body.append(h("div", { class: "row" }, q, cls), listEl, h("div", { class: "memory-add" }, newText, h("div", { class: "row" }, newCls,
    h("label", {}, newShared, t("memory.shareNew")), add)));
  openPanel("memory", `${t("memory.title")} · ${agent.name}`, body);
  await load();
}

function memoryItem(m, base, reload) {
  const text = h("div", { class: "memory-text", text: m.content });
  const url = `${base}/${encodeURIComponent(m.id)}`;
  const item = h("div", { class: "memory-item", dataset: { id: m.id } },
    h("div", { class: "memory-meta" },
      h("span", { class: `pill ${m.class || ""}`, text: t(`memory.${m.class || "semantic"}`) }),
      m.importance !== undefined ? h("span", { class: "muted", text: `★ ${Number(m.importance).toFixed(1)}` }) : null,
      h("span", { class: `pill scope-${m.scope}`, title: m.source && m.source.channelId ? `#${m.source.channelId}` : "",
        text: m.scope === "shared" ? t("memory.shared") : t("memory.private", {
          who: (S.users && S.users.get(m.userId) || {}).displayName || (S.users && S.users.get(m.userId) || {}).username || t("memory.itsChannel") }) }),
      h("span", { class: "muted", text: fmtTime(m.updatedAt || m.createdAt) })),
    text);
  const actions = h("div", { class: "row" },
    h("button", { type: "button", class: "link-btn", text: t("message.edit"), onclick: () => {
      const ta = h("textarea", { rows: "3", value: m.content });
      const save = h("button", { type: "button", class: "primary", text: t("common.save") });
      save.addEventListener("click", busy(save, async () => {
        await put(url, { content: ta.value, class: m.class });
        await reload();
      }));
      text.replaceWith(h("div", {}, ta, save));
      actions.remove();
    } }),
    h("button", { type: "button", class: "link-btn", text: t(m.scope === "shared" ? "memory.makePrivate" : "memory.share"),
      onclick: async () => {
        try {
          await put(url, { scope: m.scope === "shared" ? "private" : "shared" });
          await reload();
        } catch (e) { report(e); }
      } }),
    h("button", { type: "button", class: "link-btn danger-text", text: t("message.delete"), onclick: async () => {
      if (!window.confirm(t("memory.confirmDelete"))) return;
      try {
        await del(url);
        await reload();
      } catch (e) { report(e); }
    } }));
  if (roleAtLeast(S.me.role, "admin")) item.appendChild(actions);
  return item;
}

on("channel:opened", () => { if (currentPanel() === "memory") closePanel(); });
