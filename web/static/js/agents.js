// The agents editor: the list of agents, and creating, editing or deleting one.
import { del, get, post, put } from "./api.js";
import { avatarEl, h, roleAtLeast, toast } from "./dom.js";
import { t } from "./i18n.js";
import { renderInto } from "./render.js";
import { S, report } from "./state.js";
import { busy, field, modal } from "./ui.js";
import { loadAgents, loadChannels, renderChatList } from "./sidebar.js";

export async function openAgents() {
  if (!roleAtLeast(S.me.role, "admin")) {
    modal(t("nav.agents"), h("p", { class: "error", id: "forbidden", text: t("error.forbidden") }));
    return;
  }
  await loadAgents();
  const body = h("div", { class: "agent-admin" });
  const add = h("button", { type: "button", class: "primary", id: "agent-new", text: t("agents.new"), onclick: () => editAgent(null) });
  body.appendChild(h("div", { class: "row" }, add));
  for (const a of S.agents.values()) {
    body.appendChild(h("div", { class: "agent-row", dataset: { agentId: a.id } },
      avatarEl(a.avatar || a.name),
      h("div", { class: "grow" }, h("div", { class: "name", text: a.name }), h("div", { class: "muted", text: a.description || "" }),
        h("div", { class: "muted small", text: `${a.model || t("agents.defaultModel")} · ${(a.tools || []).join(", ")}` })),
      h("button", { type: "button", class: "act-edit", text: t("message.edit"), onclick: () => editAgent(a.id) })));
  }
  modal(t("nav.agents"), body, { wide: true, id: "agents" });
}

async function modelOptions() {
  const models = new Set();
  try {
    const s = await get("/api/settings");
    for (const p of s.providers || []) for (const m of p.models || []) models.add(typeof m === "string" ? m : m.id || m.name);
    if (s.defaultModel) models.add(s.defaultModel);
  } catch (e) { /* guests and members cannot read settings */ }
  return [...models].filter(Boolean);
}

// The tools an agent may be given: the plugins' registrations (owner), else every tool some agent has.
async function toolOptions() {
  try {
    const r = await get("/api/tools");
    return (r.tools || []).map((tool) => ({ name: tool.name, description: tool.description || "" }));
  } catch (e) {
    // older servers: the tools agents already have
    const names = new Set();
    for (const a of S.agents.values()) for (const n of a.tools || []) names.add(n);
    return [...names].sort().map((name) => ({ name }));
  }
}

export async function editAgent(id) {
  let a = { name: "", avatar: "🤖", description: "", model: "", tools: [], soul: "", knowledge: false };
  if (id) {
    const r = await get(`/api/agents/${encodeURIComponent(id)}`);
    a = r.agent || r;
    a.soul = a.soul ?? a.soulMd ?? a.SOUL ?? "";
  }
  const [models, tools] = await Promise.all([modelOptions(), toolOptions()]);
  const name = h("input", { id: "agent-name", value: a.name, required: true, maxlength: "64" });
  const avatar = h("input", { id: "agent-avatar", value: a.avatar || "", maxlength: "8" });
  const desc = h("input", { id: "agent-description", value: a.description || "" });
  const model = h("input", { id: "agent-model", value: a.model || "", list: "model-list", placeholder: t("agents.defaultModel") });
  const dl = h("datalist", { id: "model-list" }, models.map((m) => h("option", { value: m })));
  const toolBox = h("div", { class: "checks", id: "agent-tools" });
  const chosen = new Set(a.tools || []);
  for (const tool of tools) {
    toolBox.appendChild(h("label", { class: "check", title: tool.description || "" },
      h("input", { type: "checkbox", value: tool.name, checked: chosen.has(tool.name),
        onchange: (ev) => (ev.target.checked ? chosen.add(tool.name) : chosen.delete(tool.name)) }),
      h("span", { text: tool.name })));
  }
  const knowledge = h("input", { type: "checkbox", id: "agent-knowledge", checked: Boolean(a.knowledge) });
  const approval = h("input", { type: "checkbox", id: "agent-require-approval", checked: Boolean(a.requireApproval) });
  const soul = h("textarea", { id: "agent-soul", rows: "14", class: "mono", value: a.soul || "" });
  const preview = h("div", { class: "md soul-preview", id: "agent-soul-preview", hidden: true });
  const tabEdit = h("button", { type: "button", class: "tab active", text: t("agents.soulEdit") });
  const tabPrev = h("button", { type: "button", class: "tab", id: "agent-soul-preview-tab", text: t("agents.soulPreview") });
  tabEdit.addEventListener("click", () => { soul.hidden = false; preview.hidden = true; tabEdit.classList.add("active"); tabPrev.classList.remove("active"); });
  tabPrev.addEventListener("click", () => {
    renderInto(preview, soul.value, t);
    soul.hidden = true;
    preview.hidden = false;
    tabPrev.classList.add("active");
    tabEdit.classList.remove("active");
  });
  const save = h("button", { type: "submit", class: "primary", id: "agent-save", text: t("common.save") });
  const form = h("form", { class: "form agent-form" },
    h("div", { class: "grid2" }, field(t("agents.name"), name), field(t("agents.avatar"), avatar)),
    field(t("agents.description"), desc),
    field(t("agents.model"), h("div", {}, model, dl)),
    field(t("agents.tools"), toolBox),
    h("label", { class: "check" }, knowledge, h("span", { text: t("agents.knowledge") })),
    h("label", { class: "check" }, approval, h("span", { text: t("agents.requireApproval") })),
    field("SOUL.md", h("div", {}, h("div", { class: "tabs" }, tabEdit, tabPrev), soul, preview)),
    h("div", { class: "row" }, save,
      id ? h("button", { type: "button", class: "danger", text: t("agents.delete"), onclick: async () => {
        if (!window.confirm(t("agents.confirmDelete"))) return;
        try {
          await del(`/api/agents/${encodeURIComponent(id)}`);
          await loadAgents();
          await loadChannels();
          openAgents();
        } catch (e) { report(e); }
      } }) : null));
  form.addEventListener("submit", busy(save, async () => {
    const body = { name: name.value.trim(), avatar: avatar.value.trim(), description: desc.value.trim(),
      model: model.value.trim(), tools: [...chosen], soul: soul.value, knowledge: knowledge.checked,
      requireApproval: approval.checked };
    if (id) await put(`/api/agents/${encodeURIComponent(id)}`, body);
    else await post("/api/agents", body);
    await loadAgents();
    renderChatList();
    toast(t("common.saved"));
    openAgents();
  }));
  modal(id ? `${t("agents.edit")} · ${a.name}` : t("agents.new"), form, { wide: true, id: "agent-edit" });
}
