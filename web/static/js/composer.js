// The composer: sending, stopping a reply, uploads (button, paste, drop) and @mentions.
import { post, upload } from "./api.js";
import { $, avatarEl, clear, h } from "./dom.js";
import { t } from "./i18n.js";
import { S, person, personAvatar, report } from "./state.js";
import { channelAgents, renderChatList } from "./sidebar.js";
import { list } from "./messages.js";
import { appendMessage, setThinking } from "./chat.js";

// ------------------------------------------------------------------ sending

async function send(content) {
  const c = S.channels.get(S.active);
  if (!c || !content.trim()) return;
  try {
    const r = await post("/api/messages", { channelId: c.id, content, type: "text" });
    const m = r.message || { id: r.id, channelId: c.id, userId: S.me.id, agentId: null, content, type: "text",
      createdAt: new Date().toISOString(), metadata: {} };
    if (c.id === S.active && !list().querySelector(`[data-id="${CSS.escape(m.id)}"]`)) appendMessage(m);
    S.lastMsg[c.id] = m;
    renderChatList();
    const names = channelAgents(c);
    if (c.type === "dm" && names[0]) setThinking(true, names[0].name);
    else if (/@/.test(content) || c.defaultAgentId || (c.chain || []).length) setThinking(true);
  } catch (e) {
    report(e);
    throw e;
  }
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

async function uploadFiles(files) {
  const c = S.channels.get(S.active);
  if (!c) return;
  for (const file of files) {
    const isImage = IMAGE_TYPES.includes(file.type);
    const bar = h("progress", { max: "1", value: "0" });
    const thumb = isImage ? h("img", { class: "upload-thumb", src: URL.createObjectURL(file), alt: "" }) : null;
    const row = h("div", { class: "upload-row" }, thumb, h("span", { class: "file-name", text: file.name }), bar);
    $("#uploads").appendChild(row);
    try {
      const r = await upload("/api/upload", { file }, (p) => { bar.value = p; });
      const type = isImage ? "image" : "file";
      const msg = { channelId: c.id, content: r.url, type, metadata: { name: file.name, size: file.size } };
      const sent = await post("/api/messages", msg);
      if (c.id === S.active && sent.id && !list().querySelector(`[data-id="${CSS.escape(sent.id)}"]`)) {
        appendMessage({ id: sent.id, ...msg, userId: S.me.id, agentId: null, createdAt: new Date().toISOString() });
      }
    } catch (e) {
      report(e);
    } finally {
      row.remove();
      if (thumb) URL.revokeObjectURL(thumb.src);
    }
  }
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

// ------------------------------------------------------------------ wiring

export function wireComposer() {
  const ta = $("#composer-input");
  $("#composer").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const content = ta.value;
    if (!content.trim()) return;
    ta.value = "";
    autosize();
    try {
      await send(content);
    } catch (e) {
      ta.value = content;
    }
  });
  const autosize = () => {
    ta.style.height = "auto";
    ta.style.height = `${Math.min(ta.scrollHeight, 200)}px`;
  };
  ta.addEventListener("input", () => { autosize(); updateMention(); });
  ta.addEventListener("click", updateMention);
  ta.addEventListener("keydown", (ev) => {
    if (ev.isComposing || ev.keyCode === 229) return; // an input method is still composing: its Enter is not ours
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
    uploadFiles(Array.from(ev.target.files));
    ev.target.value = "";
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
