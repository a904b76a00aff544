// The composer: sending, stopping a reply, uploads (button, paste, drop), @mentions and
// "/workflow input" to start one of the group's workflows.
import { post, upload } from "./api.js";
import { $, avatarEl, clear, h, toast } from "./dom.js";
import { t } from "./i18n.js";
import { S, errorText, on, person, personAvatar, report } from "./state.js";
import { channelWorkflows, refreshWorkflows, startWorkflow, stepsLine } from "./workflows.js";
import { channelAgents, renderChatList } from "./sidebar.js";
import { list } from "./messages.js";
import { appendMessage, setThinking } from "./chat.js";

// ------------------------------------------------------------------ sending

async function send(content) {
  const c = S.channels.get(S.active);
  const files = draft.filter((f) => f.url);
  if (!c || (!content.trim() && !files.length)) return;
  if (draft.some((f) => !f.url)) return;  // an upload is still running
  const attachments = files.map(({ url, name, size, mimeType }) => ({ url, name, size, mimeType }));
  const metadata = attachments.length ? { attachments } : {};
  try {
    const r = await post("/api/messages", { channelId: c.id, content, type: "text", metadata });
    clearDraft();
    const m = r.message || { id: r.id, channelId: c.id, userId: S.me.id, agentId: null, content, type: "text",
      createdAt: new Date().toISOString(), metadata };
    if (c.id === S.active && !list().querySelector(`[data-id="${CSS.escape(m.id)}"]`)) appendMessage(m);
    S.lastMsg[c.id] = m;
    renderChatList();
    showHint(r.reason);
    const names = channelAgents(c);
    const started = [...S.streams.values()].some((st) => st.channelId === c.id);  // the reply began already
    if (started || (r.answeredBy && !r.answeredBy.length)) setThinking(false);
    else if (c.type === "dm" && names[0]) setThinking(true, names[0].name);
    else if ((r.answeredBy || []).length) setThinking(true);
  } catch (e) {
    report(e);
    throw e;
  }
}

// Why nobody answers (a group without default agent and no mention): said in the composer.
function showHint(reason) {
  const key = { no_default_agent: "composer.noDefaultAgent", no_agents: "composer.noAgents" }[reason];
  say(key ? t(key) : "", "reason");
}

// The line above the input: why nobody answered, what Enter will start, or why a start was refused.
function say(text, kind) {
  const hint = $("#composer-hint");
  hint.hidden = !text;
  hint.textContent = text || "";
  hint.dataset.kind = text ? kind : "";
  hint.classList.toggle("error", !!text && kind === "error");
}

async function stopRunning() {
  for (const st of S.streams.values()) {
    if (st.channelId !== S.active) continue;
    const sent = S.socket.send("stop", { messageId: st.messageId, channelId: st.channelId });
    if (!sent) post("/api/turns/stop", { messageId: st.messageId }).catch(report);
  }
}

// ------------------------------------------------------------------ uploads

const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

// Files picked, pasted or dropped are attached to the message being written (sent with it).
let draft = [];

function renderDraft() {
  const box = clear($("#attachments"));
  box.hidden = !draft.length;
  for (const f of draft) {
    const remove = h("button", { type: "button", class: "icon-btn act-remove", title: t("composer.removeAttachment"),
      text: "×", onclick: () => { draft = draft.filter((x) => x !== f); if (f.thumb) URL.revokeObjectURL(f.thumb); renderDraft(); } });
    box.appendChild(h("span", { class: `attachment${f.url ? "" : " uploading"}`, dataset: { name: f.name } },
      f.thumb ? h("img", { class: "upload-thumb", src: f.thumb, alt: "" }) : h("span", { text: "📎" }),
      h("span", { class: "file-name", text: f.name }), remove));
  }
}

function clearDraft() {
  for (const f of draft) if (f.thumb) URL.revokeObjectURL(f.thumb);
  draft = [];
  renderDraft();
}

async function uploadFiles(files) {
  if (!S.channels.get(S.active)) return;
  await Promise.all(files.map(async (file) => {
    const isImage = IMAGE_TYPES.includes(file.type);
    const item = { name: file.name, size: file.size, thumb: isImage ? URL.createObjectURL(file) : null };
    const bar = h("progress", { max: "1", value: "0" });
    const row = h("div", { class: "upload-row" }, h("span", { class: "file-name", text: file.name }), bar);
    draft.push(item);
    renderDraft();
    $("#uploads").appendChild(row);
    try {
      const r = await upload("/api/upload", { file }, (p) => { bar.value = p; });
      Object.assign(item, { url: r.url, mimeType: r.mimeType, size: r.size });
    } catch (e) {
      draft = draft.filter((x) => x !== item);  // refused (too large, unknown type): the rest of the draft stays
      report(e);
    } finally {
      row.remove();
      renderDraft();
    }
  }));
}

// ------------------------------------------------------------------ @mentions

let mentionState = null;

// Agents and people of the chat whose name (any language), id or username contains what was typed.
export function mentionCandidates(c, typed) {
  const p = typed.toLowerCase();
  const hit = (...names) => names.some((n) => String(n || "").toLowerCase().includes(p));
  const agents = channelAgents(c).filter((a) => hit(a.name, a.id))
    .map((a) => ({ id: a.id, name: a.name, avatar: a.avatar || a.name, description: a.description || "", kind: "agent" }));
  const people = (c.userIds || []).filter((id) => id !== S.me.id).map((id) => person(id)).filter(Boolean)
    .filter((u) => hit(u.displayName, u.username))
    // a name with spaces would end the mention early: such people are mentioned by username
    .map((u) => ({ id: u.id, name: /\s/.test(u.displayName || "") ? u.username : u.displayName || u.username,
      label: u.displayName || u.username, avatar: personAvatar(u), description: t(`role.${u.role}`), kind: "person" }));
  const items = [...agents, ...people];
  if ("all".startsWith(p)) items.push({ id: "@all", name: "all", avatar: "📣", description: t("mention.all"), kind: "all" });
  return items.slice(0, 8);
}

function updateMention() {
  const ta = $("#composer-input");
  const popup = $("#mention-popup");
  const c = S.channels.get(S.active);
  const before = ta.value.slice(0, ta.selectionStart);
  const m = /(^|[\s,，。!！?？(（])@([^\s@]*)$/.exec(before);
  if (!c || c.type !== "group" || !m) {
    popup.hidden = true;
    mentionState = null;
    return;
  }
  const items = mentionCandidates(c, m[2]);
  if (!items.length) {
    popup.hidden = true;
    mentionState = null;
    return;
  }
  mentionState = { start: before.length - m[2].length - 1, items, index: 0 };
  renderMention();
}

function renderMention() {
  const popup = clear($("#mention-popup"));
  popup.dataset.kind = "mention";
  mentionState.items.forEach((a, i) => {
    popup.appendChild(h("div", {
      class: `mention-item${i === mentionState.index ? " active" : ""}`, role: "option",
      dataset: { kind: a.kind, id: a.id },
      onmousedown: (ev) => { ev.preventDefault(); pickMention(i); },
    }, avatarEl(a.avatar, "avatar small"), h("span", { class: "mention-name", text: a.label || a.name }),
    h("span", { class: "muted", text: a.description || "" })));
  });
  popup.hidden = false;
}

function pickMention(i) {
  const ta = $("#composer-input");
  const a = mentionState.items[i];
  const after = ta.value.slice(ta.selectionStart);
  const head = ta.value.slice(0, mentionState.start);
  ta.value = `${head}@${a.name} ${after}`;
  const pos = head.length + a.name.length + 2;
  ta.setSelectionRange(pos, pos);
  $("#mention-popup").hidden = true;
  mentionState = null;
  ta.focus();
}

// ------------------------------------------------------------------ /workflow commands

// A workflow is called by its name, spaces made dashes, any case: "Poem pipeline" → /poem-pipeline.
export function commandName(w) {
  return String(w.name || "").trim().toLowerCase().replace(/\s+/g, "-");
}

// "/name the input" in a group: the workflow of that name and the input, else null (sent as a message).
export function parseCommand(c, text) {
  const m = /^\/([^\s/]+)(?:\s+([\s\S]*))?$/.exec(String(text).trim());
  if (!c || c.type !== "group" || !m) return null;
  const w = channelWorkflows(c.id).find((x) => commandName(x) === m[1].toLowerCase());
  return w ? { workflow: w, input: (m[2] || "").trim() } : null;
}

let commandState = null;
let refreshed = null; // the channel whose workflows were read again when "/" was typed

function updateCommand() {
  const ta = $("#composer-input");
  const c = S.channels.get(S.active);
  const m = /^\/([^\s/]*)$/.exec(ta.value.slice(0, ta.selectionStart));
  if (!c || c.type !== "group" || !m) {
    if (commandState) closeCommand();
    refreshed = null;
    showCommandHint();
    return;
  }
  if (refreshed !== c.id) {  // someone may have added one since the group was opened
    refreshed = c.id;
    refreshWorkflows(c.id).then(() => { if (commandState && S.active === c.id) updateCommand(); }).catch(() => {});
  }
  const typed = m[1].toLowerCase();
  const items = channelWorkflows(c.id)
    .filter((w) => commandName(w).includes(typed) || String(w.name).toLowerCase().includes(typed)).slice(0, 8);
  const index = commandState ? Math.min(commandState.index, Math.max(items.length - 1, 0)) : 0;
  commandState = { items, index };
  renderCommand();
  showCommandHint();
}

function renderCommand() {
  const popup = clear($("#mention-popup"));
  popup.dataset.kind = "command";
  if (!commandState.items.length) {
    popup.appendChild(h("div", { class: "mention-item command-none muted", role: "option", "aria-disabled": "true",
      text: t("wf.noCommand") }));
  }
  commandState.items.forEach((w, i) => {
    popup.appendChild(h("div", {
      class: `mention-item command-item${i === commandState.index ? " active" : ""}`, role: "option",
      "aria-selected": i === commandState.index ? "true" : "false", dataset: { kind: "workflow", id: w.id },
      onmousedown: (ev) => { ev.preventDefault(); pickCommand(i); },
    }, avatarEl("▶", "avatar small"),
    h("span", { class: "command-text" }, h("span", { class: "mention-name", text: `/${commandName(w)}` }),
      h("span", { class: "muted", text: `${w.name} · ${stepsLine(w)}` }))));
  });
  popup.hidden = false;
}

function closeCommand() {
  $("#mention-popup").hidden = true;
  commandState = null;
}

function pickCommand(i) {
  const ta = $("#composer-input");
  const w = commandState.items[i];
  if (!w) return;
  const after = ta.value.slice(ta.selectionStart).replace(/^\s+/, "");
  ta.value = `/${commandName(w)} ${after}`;
  const pos = commandName(w).length + 2;
  ta.setSelectionRange(pos, pos);
  closeCommand();
  ta.focus();
  showCommandHint();
}

// While the text starts a workflow, the hint says so (Enter will not post a message).
function showCommandHint() {
  const cmd = parseCommand(S.channels.get(S.active), $("#composer-input").value);
  const hint = $("#composer-hint");
  if (cmd) say(t("wf.commandHint", { name: cmd.workflow.name }), "command");
  else if (hint.dataset.kind === "command" || hint.dataset.kind === "error") say("", "");
}

async function runCommand(cmd, content) {
  const ta = $("#composer-input");
  if (!cmd.input) {
    say(t("wf.commandInput", { name: cmd.workflow.name }), "error");
    return;
  }
  try {
    await startWorkflow(cmd.workflow, cmd.input);
    say("", "");
    toast(t("wf.startedToast", { name: cmd.workflow.name }));
  } catch (e) {
    ta.value = content;  // refused (read only, too many turns …): the text stays, the reason is said
    say(t("wf.startRefused", { name: cmd.workflow.name, reason: errorText(e) }), "error");
  }
}

// ------------------------------------------------------------------ wiring

export function wireComposer() {
  const ta = $("#composer-input");
  $("#composer").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const content = ta.value;
    if (!content.trim() && !draft.some((f) => f.url)) return;
    const c = S.channels.get(S.active);
    let cmd = parseCommand(c, content);
    if (!cmd && c && c.type === "group" && /^\/[^\s/]+(\s|$)/.test(content.trim())) {
      // pasted or typed fast: the group's workflows may not be read yet (or one is new)
      try { await refreshWorkflows(c.id); } catch (e) { /* unreadable now: the text goes as a message */ }
      cmd = parseCommand(c, content);
    }
    if (cmd && !cmd.input) return runCommand(cmd, content);
    ta.value = "";
    autosize();
    if (cmd) {
      await runCommand(cmd, content);
      autosize();
      return;
    }
    try {
      await send(content);
    } catch (e) {
      ta.value = content;  // the draft (text and files) is kept
    }
  });
  const autosize = () => {
    ta.style.height = "auto";
    ta.style.height = `${Math.min(ta.scrollHeight, 200)}px`;
  };
  const typed = () => { updateMention(); updateCommand(); };
  ta.addEventListener("input", () => { autosize(); typed(); });
  ta.addEventListener("click", typed);
  ta.addEventListener("keydown", (ev) => {
    if (ev.isComposing || ev.keyCode === 229) return; // an input method is still composing: its Enter is not ours
    if (commandState && !$("#mention-popup").hidden) {
      const n = commandState.items.length;
      if ((ev.key === "ArrowDown" || ev.key === "ArrowUp") && n) {
        ev.preventDefault();
        commandState.index = (commandState.index + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
        renderCommand();
        return;
      }
      if (((ev.key === "Enter" && !ev.shiftKey) || ev.key === "Tab") && n) {
        ev.preventDefault();
        pickCommand(commandState.index);
        return;
      }
      if (ev.key === "Escape") {
        ev.preventDefault();
        closeCommand();
        return;
      }
    }
    if (mentionState && !$("#mention-popup").hidden) {
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        const n = mentionState.items.length;
        mentionState.index = (mentionState.index + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
        renderMention();
        return;
      }
      if (ev.key === "Enter" || ev.key === "Tab") {
        ev.preventDefault();
        pickMention(mentionState.index);
        return;
      }
      if (ev.key === "Escape") {
        $("#mention-popup").hidden = true;
        mentionState = null;
        return;
      }
    }
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  $("#btn-stop").addEventListener("click", stopRunning);
  $("#btn-attach").addEventListener("click", () => $("#file-input").click());
  $("#file-input").addEventListener("change", (ev) => {
    uploadFiles(Array.from(ev.target.files)).finally(() => { ev.target.value = ""; });
  });
  ta.addEventListener("paste", (ev) => {
    const files = Array.from((ev.clipboardData && ev.clipboardData.files) || []);
    if (files.length) {
      ev.preventDefault();
      uploadFiles(files);
    }
  });
  const chat = $("#chat");
  let dragDepth = 0;
  chat.addEventListener("dragenter", (ev) => {
    if (!S.active || !ev.dataTransfer.types.includes("Files")) return;
    dragDepth += 1;
    $("#drop-zone").hidden = false;
  });
  chat.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) $("#drop-zone").hidden = true;
  });
  chat.addEventListener("dragover", (ev) => { if (S.active) ev.preventDefault(); });
  chat.addEventListener("drop", (ev) => {
    ev.preventDefault();
    dragDepth = 0;
    $("#drop-zone").hidden = true;
    if (S.active) uploadFiles(Array.from(ev.dataTransfer.files || []));
  });
}

on("channel:opened", () => {
  showHint(null);
  if (commandState) closeCommand();
  refreshed = null;
});
