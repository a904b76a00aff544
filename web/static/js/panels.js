// Side panels and dialogs: search results, collaboration, memory, knowledge,
// agents, groups, settings and the account page.
import { ApiError, del, get, post, put, qs, upload } from "./api.js";
import { $, avatarEl, clear, fmtBytes, fmtTime, h, roleAtLeast, toast } from "./dom.js";
import { lang, setLang, t } from "./i18n.js";
import { renderInto } from "./render.js";
import { S, agentName, applyTheme, errorText, loadAgents, loadChannels, openChannel, renderChatList, report } from "./app.js";

// ------------------------------------------------------------------ panel + modal

let panelKind = null;

export function openPanel(kind, title, body) {
  panelKind = kind;
  $("#panel").hidden = false;
  $("#panel").dataset.kind = kind;
  $("#panel-title").textContent = title;
  clear($("#panel-body")).appendChild(body);
}

export function closePanel() {
  $("#panel").hidden = true;
  panelKind = null;
}

function modal(title, body, { wide = false, id = "" } = {}) {
  const dlg = $("#modal");
  dlg.className = `modal${wide ? " wide" : ""}`;
  dlg.dataset.kind = id;
  const close = () => {
    dlg.close();
    if (/^#\/(settings|agents|account)$/.test(location.hash)) history.replaceState(null, "", S.active ? `#/c/${encodeURIComponent(S.active)}` : "#/");
  };
  clear($("#modal-body")).appendChild(h("div", { class: "modal-inner" },
    h("header", { class: "modal-head" }, h("h3", { text: title }),
      h("button", { type: "button", class: "icon-btn modal-close", title: t("common.close"), text: "×", onclick: close })),
    body));
  if (!dlg.open) dlg.showModal();
  dlg.onclose = () => {
    if (/^#\/(settings|agents|account)$/.test(location.hash)) history.replaceState(null, "", S.active ? `#/c/${encodeURIComponent(S.active)}` : "#/");
  };
  return close;
}

function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label", text: label }), input,
    hint ? h("small", { class: "muted", text: hint }) : null);
}

function busy(btn, fn) {
  return async (ev) => {
    if (ev) ev.preventDefault();
    btn.disabled = true;
    try {
      await fn();
    } catch (e) {
      report(e);
    } finally {
      btn.disabled = false;
    }
  };
}

export function onChannelOpened(c) {
  if (panelKind === "collab" && c.type !== "group") closePanel();
  else if (panelKind === "collab") openCollab();
  if (panelKind === "memory" || panelKind === "knowledge") closePanel();
}

// ------------------------------------------------------------------ search

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

// ------------------------------------------------------------------ collaboration

export function onCollab(d) {
  const prev = S.chains.get(d.chainId) || { steps: {} };
  const st = { ...prev, ...d };
  st.steps = { ...prev.steps, [d.step]: { agent: d.currentAgent, status: d.status } };
  S.chains.set(d.chainId, st);
  if (d.channelId === S.active) {
    $("#btn-collab").hidden = false;
    if (panelKind !== "collab") openCollab();
    else openCollab();
  }
}

export function openCollab() {
  const chains = [...S.chains.values()].filter((c) => c.channelId === S.active);
  const body = h("div", { class: "collab" });
  if (!chains.length) body.appendChild(h("p", { class: "muted", text: t("collab.none") }));
  for (const c of chains.reverse()) {
    const total = c.totalSteps || Object.keys(c.steps).length;
    const planned = ((S.channels.get(c.channelId) || {}).chain) || [];
    const steps = h("ol", { class: "collab-steps" });
    for (let i = 1; i <= total; i++) {
      const s = c.steps[i];
      let state = "waiting";
      if (s) state = s.status;
      if (i < c.step) state = "completed";
      if (i === c.step) state = c.status === "paused" ? "completed" : c.status;
      if (i === c.step + 1 && c.status === "paused") state = "paused"; // the next agent waits for approval
      const who = (i === c.step + 1 && c.nextAgent) || (s && s.agent) || planned[i - 1];
      steps.appendChild(h("li", { class: `step ${state}`, dataset: { state } },
        h("span", { class: "step-agent", text: who ? agentName(who) : `#${i}` }),
        h("span", { class: "step-state", text: t(`collab.${state}`) })));
    }
    const card = h("section", { class: `chain ${c.status}`, dataset: { chainId: c.chainId, status: c.status } },
      h("div", { class: "chain-head" },
        h("strong", { text: t("collab.step", { step: c.step, total }) }),
        h("span", { class: `pill ${c.status}`, text: t(`collab.${c.status}`) })),
      steps,
      c.reason ? h("p", { class: "muted", text: c.reason }) : null);
    if (c.status === "paused") {
      const ta = h("textarea", { class: "handoff", rows: "5", value: c.handoff || "" });
      const approve = h("button", { type: "button", class: "primary act-approve", text: t("collab.approve") });
      const stop = h("button", { type: "button", class: "danger act-stop", text: t("collab.stop") });
      approve.addEventListener("click", busy(approve, () => chainAction(c, "approve", ta.value)));
      stop.addEventListener("click", busy(stop, () => chainAction(c, "stop")));
      card.append(field(t("collab.handoff"), ta), h("div", { class: "row" }, approve, stop));
    }
    body.appendChild(card);
  }
  openPanel("collab", t("collab.title"), body);
}

// approve as is, approve an edited hand-off ("edit"), or stop the chain.
async function chainAction(c, action, text) {
  if (action === "approve" && text !== undefined && text !== (c.handoff || "")) action = "edit";
  const body = { chainId: c.chainId, action, ...(action === "edit" ? { text } : {}) };
  const sent = S.socket.send("chain_decision", body);
  if (!sent) await post(`/api/chains/${encodeURIComponent(c.chainId)}/decision`, body);
}

// ------------------------------------------------------------------ new DM, groups

export function newDm() {
  const body = h("div", { class: "agent-pick" });
  const close = modal(t("chat.newDm"), body);
  for (const a of S.agents.values()) {
    body.appendChild(h("button", { type: "button", class: "agent-option", dataset: { agentId: a.id },
      onclick: async () => {
        const existing = [...S.channels.values()].find((c) => c.type === "dm" && (c.agentIds || [])[0] === a.id);
        try {
          let id = existing && existing.id;
          if (!id) {
            const r = await post("/api/channels", { name: a.name, type: "dm", agentIds: [a.id] });
            id = (r.channel || r).id;
            await loadChannels();
          }
          close();
          location.hash = `#/c/${encodeURIComponent(id)}`;
        } catch (e) {
          report(e);
        }
      } }, avatarEl(a.avatar || a.name), h("span", { class: "name", text: a.name }),
    h("span", { class: "muted", text: a.description || "" })));
  }
  if (!S.agents.size) body.appendChild(h("p", { class: "muted", text: t("agents.none") }));
}

export function editGroup(c) {
  const isNew = !c;
  const name = h("input", { id: "group-name", value: c ? c.name : "", required: true, maxlength: "80" });
  const members = new Set(c ? c.agentIds || [] : []);
  const chain = c ? [...(c.chain || [])] : [];
  const memberBox = h("div", { class: "checks", id: "group-members" });
  const defaultSel = h("select", { id: "group-default" });
  const chainList = h("ol", { class: "chain-edit", id: "group-chain" });
  const chainAdd = h("select", { id: "group-chain-add" });
  const approval = h("input", { type: "checkbox", id: "group-approval",
    checked: !!(c && c.config && c.config.chainApproval) });

  const refresh = () => {
    clear(defaultSel).appendChild(h("option", { value: "", text: t("group.noDefault") }));
    clear(chainAdd).appendChild(h("option", { value: "", text: t("group.chainAdd") }));
    for (const a of S.agents.values()) {
      if (!members.has(a.id)) continue;
      defaultSel.appendChild(h("option", { value: a.id, text: a.name, selected: c && c.defaultAgentId === a.id }));
      chainAdd.appendChild(h("option", { value: a.id, text: a.name }));
    }
    clear(chainList);
    chain.forEach((id, i) => {
      chainList.appendChild(h("li", {}, h("span", { text: agentName(id) }),
        h("button", { type: "button", class: "link-btn", text: "↑", disabled: i === 0,
          onclick: () => { [chain[i - 1], chain[i]] = [chain[i], chain[i - 1]]; refresh(); } }),
        h("button", { type: "button", class: "link-btn", text: "✕",
          onclick: () => { chain.splice(i, 1); refresh(); } })));
    });
  };
  for (const a of S.agents.values()) {
    const box = h("input", { type: "checkbox", value: a.id, checked: members.has(a.id), onchange: (ev) => {
      if (ev.target.checked) members.add(a.id);
      else {
        members.delete(a.id);
        for (let i = chain.length - 1; i >= 0; i--) if (chain[i] === a.id) chain.splice(i, 1);
      }
      refresh();
    } });
    memberBox.appendChild(h("label", { class: "check" }, box, avatarEl(a.avatar || a.name, "avatar small"),
      h("span", { text: a.name })));
  }
  chainAdd.addEventListener("change", () => {
    if (chainAdd.value) chain.push(chainAdd.value);
    refresh();
  });
  refresh();
  const save = h("button", { type: "submit", class: "primary", id: "group-save", text: t("common.save") });
  const form = h("form", { class: "form" },
    field(t("group.name"), name),
    field(t("group.members"), memberBox),
    field(t("group.default"), defaultSel, t("group.defaultHint")),
    field(t("group.chain"), h("div", {}, chainList, chainAdd), t("group.chainHint")),
    h("label", { class: "check" }, approval, h("span", { text: t("group.approval") })),
    h("div", { class: "row" }, save,
      !isNew && roleAtLeast(S.me.role, "admin") ? h("button", { type: "button", class: "danger", text: t("group.delete"),
        onclick: async () => {
          if (!window.confirm(t("group.confirmDelete"))) return;
          try {
            await del(`/api/channels/${encodeURIComponent(c.id)}`);
            close();
            S.active = null;
            await loadChannels();
            location.hash = "#/";
          } catch (e) { report(e); }
        } }) : null));
  const close = modal(isNew ? t("chat.newGroup") : t("group.settings"), form, { id: "group" });
  form.addEventListener("submit", busy(save, async () => {
    const groupName = name.value.trim();
    if (!groupName) throw new Error(t("group.nameRequired"));
    const defaultAgentId = defaultSel.value || null;
    let id;
    if (isNew) {
      const r = await post("/api/channels", { name: groupName, type: "group", agentIds: [...members], defaultAgentId });
      id = (r.channel || r).id;
    } else {
      id = c.id;
      const url = `/api/channels/${encodeURIComponent(id)}`;
      const before = new Set(c.agentIds || []);
      const added = [...members].filter((a) => !before.has(a));
      if (added.length) await post(`${url}/members`, { agentIds: added });
      await put(url, { name: groupName, defaultAgentId });
      const removed = [...before].filter((a) => !members.has(a));
      if (removed.length || chain.length || (c.chain || []).length) {
        await put(`${url}/chain`, { agentIds: chain, approval: approval.checked });
      }
      for (const a of removed) await del(`${url}/members/${encodeURIComponent(a)}`);
    }
    if (isNew && chain.length) {
      await put(`/api/channels/${encodeURIComponent(id)}/chain`, { agentIds: chain, approval: approval.checked });
    }
    await loadChannels();
    close();
    if (isNew) location.hash = `#/c/${encodeURIComponent(id)}`;
    else openChannel(id);
  }));
}

// ------------------------------------------------------------------ memory

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

function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// ------------------------------------------------------------------ knowledge

let ragReload = null;
let ragPoll = null;

export function onRagProgress(d) {
  const row = document.querySelector(`.doc[data-id="${CSS.escape(d.documentId || "")}"]`);
  if (row) updateDocRow(row, d);
  if (d.status === "ready" || d.status === "failed" || d.status === "indexed") {
    if (ragReload) ragReload();
  }
}

const DONE_STATES = ["ready", "indexed", "done", "failed", "error"];

function updateDocRow(row, d) {
  const status = d.status || row.dataset.status;
  row.dataset.status = status;
  row.querySelector(".doc-state").textContent = t(`knowledge.state.${status}`) === `knowledge.state.${status}` ? status : t(`knowledge.state.${status}`);
  const bar = row.querySelector("progress");
  if (d.progress !== undefined && bar) bar.value = Number(d.progress) > 1 ? Number(d.progress) / 100 : Number(d.progress);
  if (bar) bar.hidden = DONE_STATES.includes(status);
  if (d.chunks !== undefined) row.querySelector(".doc-chunks").textContent = t("knowledge.chunks", { n: d.chunks });
}

export async function openKnowledge(agent) {
  if (!agent) return;
  const body = h("div", { class: "knowledge" });
  const listEl = h("div", { class: "doc-list" });
  const fileIn = h("input", { type: "file", id: "knowledge-file", accept: ".txt,.md,.markdown,.html,.htm,.pdf,.docx", multiple: true });
  const uploads = h("div", { class: "uploads" });
  const q = encodeURIComponent(agent.id);
  const load = async () => {
    try {
      const r = await get(`/api/rag/documents?agentId=${q}`);
      clear(listEl);
      const docs = r.documents || [];
      if (!docs.length) listEl.appendChild(h("p", { class: "muted", text: t("knowledge.none") }));
      for (const d of docs) {
        const row = h("div", { class: "doc", dataset: { id: d.id, status: d.status } },
          h("span", { class: "doc-name", text: d.name || d.filename || d.id }),
          h("span", { class: "doc-state pill" }),
          h("span", { class: "doc-chunks muted" }),
          h("progress", { max: "1", value: "0" }),
          d.error ? h("span", { class: "error doc-error", text: d.error }) : null,
          roleAtLeast(S.me.role, "admin") ? h("button", { type: "button", class: "link-btn danger-text", text: t("message.delete"),
            onclick: async () => {
              if (!window.confirm(t("knowledge.confirmDelete"))) return;
              try {
                await del(`/api/rag/documents/${encodeURIComponent(d.id)}?agentId=${q}`);
                await load();
              } catch (e) { report(e); }
            } }) : null);
        updateDocRow(row, d);
        listEl.appendChild(row);
      }
      clearTimeout(ragPoll);
      if (docs.some((d) => !DONE_STATES.includes(d.status)) && panelKind === "knowledge") ragPoll = setTimeout(load, 1500);
    } catch (e) {
      clear(listEl).appendChild(h("p", { class: "error", text: errorText(e) }));
    }
  };
  ragReload = load;
  fileIn.addEventListener("change", async () => {
    for (const file of Array.from(fileIn.files)) {
      const bar = h("progress", { max: "1", value: "0" });
      const row = h("div", { class: "upload-row" }, h("span", { class: "file-name", text: file.name }), bar);
      uploads.appendChild(row);
      try {
        await upload("/api/rag/upload", { file, agentId: agent.id }, (p) => { bar.value = p; });
        toast(t("knowledge.uploaded", { name: file.name }));
      } catch (e) {
        report(e);
      } finally {
        row.remove();
      }
      await load();
    }
    fileIn.value = "";
  });
  body.append(h("label", { class: "upload-label button" }, h("span", { text: t("knowledge.upload") }), fileIn),
    h("p", { class: "muted small", text: t("knowledge.types") }), uploads, listEl);
  openPanel("knowledge", `${t("knowledge.title")} · ${agent.name}`, body);
  await load();
}

// ------------------------------------------------------------------ agents

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
      model: model.value.trim(), tools: [...chosen], soul: soul.value, knowledge: knowledge.checked };
    if (id) await put(`/api/agents/${encodeURIComponent(id)}`, body);
    else await post("/api/agents", body);
    await loadAgents();
    renderChatList();
    toast(t("common.saved"));
    openAgents();
  }));
  modal(id ? `${t("agents.edit")} · ${a.name}` : t("agents.new"), form, { wide: true, id: "agent-edit" });
}

// ------------------------------------------------------------------ settings

export async function openSettings() {
  if (!roleAtLeast(S.me.role, "admin")) {
    modal(t("nav.settings"), h("p", { class: "error", id: "forbidden", text: t("error.forbidden") }));
    return;
  }
  const tabs = [["providers", t("settings.providers")], ["users", t("settings.users")], ["invites", t("settings.invites")]];
  const body = h("div", { class: "settings" });
  const nav = h("nav", { class: "tabs" });
  const pane = h("div", { class: "tab-pane" });
  const show = async (key) => {
    nav.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === key));
    clear(pane).appendChild(h("p", { class: "muted", text: t("common.loading") }));
    try {
      const el = await { providers: providersPane, users: usersPane, invites: invitesPane }[key]();
      clear(pane).appendChild(el);
    } catch (e) {
      clear(pane).appendChild(h("p", { class: "error", text: errorText(e) }));
    }
  };
  for (const [key, label] of tabs) nav.appendChild(h("button", { type: "button", class: "tab", dataset: { tab: key }, text: label, onclick: () => show(key) }));
  body.append(nav, pane);
  modal(t("nav.settings"), body, { wide: true, id: "settings" });
  await show("providers");
}

async function providersPane() {
  const s = await get("/api/settings");
  const providers = (s.providers || []).map((p) => ({ ...p }));
  const wrap = h("div", { class: "providers" });
  let health = {};
  try {
    const r = await get("/api/providers");
    for (const p of r.providers || []) health[p.id || p.name] = p;
  } catch (e) { health = {}; }
  const models = new Set();
  for (const m of s.models || []) models.add(typeof m === "string" ? m : m.id || m.name);
  for (const p of providers) for (const m of p.models || []) models.add(typeof m === "string" ? m : m.id);
  const def = h("select", { id: "default-model" }, h("option", { value: "", text: t("settings.autoModel") }),
    [...models].map((m) => h("option", { value: m, text: m, selected: s.defaultModel === m })));
  const saveDef = h("button", { type: "button", id: "default-model-save", text: t("common.save") });
  saveDef.addEventListener("click", busy(saveDef, async () => {
    await put("/api/settings", { defaultModel: def.value || null });
    toast(t("common.saved"));
  }));
  wrap.appendChild(h("section", {}, h("h4", { text: t("settings.defaultModel") }), h("div", { class: "row" }, def, saveDef)));
  const listEl = h("div", { class: "provider-list" });
  for (const p of providers) {
    const pid = p.id || p.name;
    const hh = health[pid] || {};
    const test = h("button", { type: "button", class: "act-test", text: t("settings.test") });
    const result = h("span", { class: "test-result" });
    test.addEventListener("click", busy(test, async () => {
      result.textContent = "…";
      try {
        const r = await post(`/api/providers/${encodeURIComponent(pid)}/test`, {});
        result.textContent = r.ok === false ? `✗ ${r.error || ""}` : `✓ ${t("settings.testOk")}${r.latencyMs ? ` (${Math.round(r.latencyMs)} ms)` : ""}`;
        result.className = `test-result ${r.ok === false ? "error" : "ok"}`;
      } catch (e) {
        if (e instanceof ApiError && (e.status === 404 || e.status === 405)) {
          // no test route on this server: show the gateway's health for this provider
          const r = await get("/api/providers");
          const mine = (r.providers || []).find((x) => (x.id || x.name) === pid) || {};
          result.textContent = `${t("settings.health")}: ${mine.state || mine.breaker || "?"}`;
          result.className = "test-result";
          return;
        }
        result.textContent = `✗ ${errorText(e)}`;
        result.className = "test-result error";
      }
    }));
    const remove = p.readOnly || p.source === "env" ? null : h("button", { type: "button", class: "link-btn danger-text", text: t("message.delete"),
      onclick: async () => {
        if (!window.confirm(t("settings.confirmDeleteProvider"))) return;
        try {
          await put("/api/settings", { providers: providers.filter((x) => x !== p && !(x.readOnly || x.source === "env")) });
          clear(wrap.parentNode || wrap).appendChild(await providersPane());
        } catch (e) { report(e); }
      } });
    listEl.appendChild(h("div", { class: "provider", dataset: { name: pid } },
      h("div", { class: "grow" },
        h("div", {}, h("strong", { text: pid }), " ", h("span", { class: "pill", text: p.kind || p.type || "" }),
          hh.state || hh.health ? h("span", { class: `pill ${hh.state || hh.health}`, text: hh.state || hh.health }) : null),
        h("div", { class: "muted small", text: p.baseUrl || p.base_url || "" }),
        h("div", { class: "muted small key-masked", text: `${t("settings.key")}: ${p.apiKey || p.key || "—"}` }),
        h("div", { class: "small", text: (p.models || []).map((m) => (typeof m === "string" ? m : m.id)).join(", ") })),
      h("div", { class: "col" }, test, result, remove)));
  }
  if (!providers.length) listEl.appendChild(h("p", { class: "muted", text: t("settings.noProviders") }));
  wrap.appendChild(h("section", {}, h("h4", { text: t("settings.providers") }), listEl));
  // add a provider
  const pname = h("input", { id: "provider-name", required: true, placeholder: "deepseek" });
  const kinds = (s.providerKinds || []).filter((k) => k.name !== "demo");
  const kind = h("select", { id: "provider-kind" }, (kinds.length ? kinds : [{ name: "openai" }, { name: "anthropic" }])
    .map((k) => h("option", { value: k.name, text: k.description ? `${k.name} — ${k.description}` : k.name })));
  const base = h("input", { id: "provider-base", placeholder: "https://api.deepseek.com/v1" });
  const key = h("input", { id: "provider-key", type: "password", autocomplete: "off" });
  const pmodels = h("input", { id: "provider-models", placeholder: "deepseek-chat, deepseek-reasoner" });
  const add = h("button", { type: "submit", class: "primary", id: "provider-add", text: t("settings.addProvider") });
  const form = h("form", { class: "form" }, h("div", { class: "grid2" }, field(t("settings.providerName"), pname), field(t("settings.kind"), kind)),
    field(t("settings.baseUrl"), base), field(t("settings.key"), key, t("settings.keyHint")),
    field(t("settings.models"), pmodels), add);
  form.addEventListener("submit", busy(add, async () => {
    const np = { id: pname.value.trim(), kind: kind.value, baseUrl: base.value.trim(), apiKey: key.value,
      models: pmodels.value.split(/[,，\s]+/).map((x) => x.trim()).filter(Boolean) };
    const keep = providers.filter((x) => !(x.readOnly || x.source === "env"));
    await put("/api/settings", { providers: [...keep, np] });
    toast(t("common.saved"));
    const fresh = await providersPane();
    wrap.replaceWith(fresh);
  }));
  wrap.appendChild(h("section", {}, h("h4", { text: t("settings.addProvider") }), form));
  return wrap;
}

async function usersPane() {
  const r = await get("/api/users");
  const wrap = h("div", { class: "users" });
  const table = h("table", { class: "table" }, h("thead", {}, h("tr", {},
    h("th", { text: t("login.username") }), h("th", { text: t("settings.role") }), h("th", { text: "" }))));
  const tbody = h("tbody");
  for (const u of r.users || []) {
    const role = h("select", { disabled: u.role === "owner" || u.id === S.me.id },
      ["owner", "admin", "member", "guest"].map((x) => h("option", { value: x, text: t(`role.${x}`), selected: u.role === x })));
    role.addEventListener("change", async () => {
      try { await put(`/api/users/${encodeURIComponent(u.id)}`, { role: role.value }); toast(t("common.saved")); } catch (e) { report(e); }
    });
    tbody.appendChild(h("tr", { dataset: { userId: u.id } }, h("td", { text: u.displayName || u.username }), h("td", {}, role),
      h("td", {}, u.role === "owner" || u.id === S.me.id ? null : h("button", { type: "button", class: "link-btn danger-text", text: t("message.delete"),
        onclick: async () => {
          if (!window.confirm(t("settings.confirmDeleteUser"))) return;
          try { await del(`/api/users/${encodeURIComponent(u.id)}`); wrap.replaceWith(await usersPane()); } catch (e) { report(e); }
        } }))));
  }
  table.appendChild(tbody);
  const uname = h("input", { id: "user-name", required: true });
  const pw = h("input", { id: "user-password", type: "password", minlength: "8", required: true, autocomplete: "new-password" });
  const role = h("select", { id: "user-role" }, ["member", "guest", "admin"].map((x) => h("option", { value: x, text: t(`role.${x}`) })));
  const add = h("button", { type: "submit", class: "primary", text: t("settings.addUser") });
  const form = h("form", { class: "form" }, h("div", { class: "grid3" }, field(t("login.username"), uname),
    field(t("login.password"), pw), field(t("settings.role"), role)), add);
  form.addEventListener("submit", busy(add, async () => {
    await post("/api/users", { username: uname.value.trim(), password: pw.value, role: role.value });
    wrap.replaceWith(await usersPane());
  }));
  wrap.append(table, h("h4", { text: t("settings.addUser") }), form);
  return wrap;
}

async function invitesPane() {
  const r = await get("/api/invites");
  const wrap = h("div", { class: "invites" });
  const role = h("select", { id: "invite-role" }, ["member", "guest", "admin"].map((x) => h("option", { value: x, text: t(`role.${x}`) })));
  const create = h("button", { type: "button", class: "primary", id: "invite-create", text: t("settings.createInvite") });
  const shown = h("div", { class: "once", id: "invite-link", hidden: true });
  create.addEventListener("click", busy(create, async () => {
    const res = await post("/api/invites", { role: role.value });
    const link = res.url || res.link || (res.token ? `${location.origin}/invite/${res.token}` : "");
    const full = link.startsWith("/") ? location.origin + link : link;
    clear(shown).append(h("p", { text: t("settings.inviteOnce") }), h("input", { readonly: true, value: full, class: "mono", onclick: (ev) => ev.target.select() }));
    shown.hidden = false;
  }));
  const listEl = h("ul", { class: "plain" });
  for (const inv of r.invites || []) {
    listEl.appendChild(h("li", {}, h("span", { text: `${t(`role.${inv.role}`)} · ${fmtTime(inv.createdAt)} · ${inv.uses ?? 0}/${inv.maxUses ?? 1}` }),
      inv.revokedAt ? h("span", { class: "muted", text: ` ${t("settings.revoked")}` }) :
        h("button", { type: "button", class: "link-btn danger-text", text: t("settings.revoke"), onclick: async () => {
          try { await del(`/api/invites/${encodeURIComponent(inv.id)}`); wrap.replaceWith(await invitesPane()); } catch (e) { report(e); }
        } })));
  }
  wrap.append(h("div", { class: "row" }, role, create), shown, listEl);
  return wrap;
}

// ------------------------------------------------------------------ account (everyone)

export async function openAccount() {
  const body = h("div", { class: "account" });
  const langSel = h("select", { id: "account-lang" }, ["zh", "en"].map((l) => h("option", { value: l, text: t(`lang.${l}`), selected: lang() === l })));
  langSel.addEventListener("change", () => { setLang(langSel.value); location.reload(); });
  const theme = h("select", { id: "account-theme" }, ["auto", "light", "dark"].map((x) => h("option", { value: x, text: t(`theme.${x}`),
    selected: (document.documentElement.dataset.theme || "auto") === x })));
  theme.addEventListener("change", () => applyTheme(theme.value));
  body.append(h("p", {}, h("strong", { text: S.me.displayName || S.me.username }), " ", h("span", { class: "pill", text: t(`role.${S.me.role}`) })),
    h("div", { class: "grid2" }, field(t("settings.language"), langSel), field(t("settings.theme"), theme)));
  // personal API keys
  const keys = h("div", { class: "keys" });
  const loadKeys = async () => {
    clear(keys);
    try {
      const r = await get("/api/keys");
      for (const k of r.keys || []) {
        keys.appendChild(h("div", { class: "key-row", dataset: { id: k.id } },
          h("span", { class: "mono", text: `${k.prefix || ""}…` }), h("span", { text: k.name || "" }),
          h("span", { class: "muted", text: fmtTime(k.createdAt) }),
          k.revokedAt ? h("span", { class: "muted", text: t("settings.revoked") }) :
            h("button", { type: "button", class: "link-btn danger-text", text: t("settings.revoke"), onclick: async () => {
              try { await del(`/api/keys/${encodeURIComponent(k.id)}`); await loadKeys(); } catch (e) { report(e); }
            } })));
      }
      if (!(r.keys || []).length) keys.appendChild(h("p", { class: "muted", text: t("settings.noKeys") }));
    } catch (e) {
      keys.appendChild(h("p", { class: "error", text: errorText(e) }));
    }
  };
  const kname = h("input", { id: "key-name", placeholder: t("settings.keyName") });
  const kadd = h("button", { type: "button", class: "primary", id: "key-create", text: t("settings.createKey") });
  const once = h("div", { class: "once", id: "key-once", hidden: true });
  kadd.addEventListener("click", busy(kadd, async () => {
    const r = await post("/api/keys", { name: kname.value.trim() || "key" });
    clear(once).append(h("p", { text: t("settings.keyOnce") }), h("input", { readonly: true, class: "mono", value: r.key || r.token || "", onclick: (ev) => ev.target.select() }));
    once.hidden = false;
    kname.value = "";
    await loadKeys();
  }));
  body.append(h("h4", { text: t("settings.apiKeys") }), h("div", { class: "row" }, kname, kadd), once, keys);
  modal(t("nav.account"), body, { id: "account" });
  await loadKeys();
}

export { ApiError, fmtBytes };
