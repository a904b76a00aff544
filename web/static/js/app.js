// The chat app: chat list, message view, streaming, tool cards, collaboration,
// search, uploads, @mentions. Panels and dialogs live in panels.js.
import { ApiError, del, get, post, put, qs, upload } from "./api.js";
import { $, $$, avatarEl, clear, fmtBytes, fmtTime, h, roleAtLeast, toast } from "./dom.js";
import { loadLang, setLang, t, translate } from "./i18n.js";
import { renderInto } from "./render.js";
import { Socket } from "./ws.js";
import * as panels from "./panels.js";

const boot = JSON.parse(document.getElementById("boot").textContent);

export const S = {
  me: null,
  agents: new Map(),
  users: new Map(),
  channels: new Map(),
  active: null, // channel id
  oldestId: null,
  hasMore: true,
  loadingOlder: false,
  streams: new Map(), // messageId -> {el, text, agentId, channelId, frame}
  chains: new Map(), // chainId -> collab state
  unread: {},
  lastMsg: {},
  socket: null,
};

const PAGE = 50;

// ------------------------------------------------------------------ helpers

export function agentName(id) {
  const a = S.agents.get(id);
  return a ? a.name : id || "";
}

function userName(id) {
  if (S.me && id === S.me.id) return S.me.displayName || S.me.username;
  const u = S.users.get(id);
  return u ? (u.displayName || u.username) : t("chat.someone");
}

export function errorText(err) {
  if (err instanceof ApiError) {
    const known = t(`error.${err.code}`);
    return known !== `error.${err.code}` ? known : err.message;
  }
  return String((err && err.message) || err);
}

export function report(err) {
  toast(errorText(err), "error");
}

function readState() {
  try {
    S.unread = JSON.parse(localStorage.getItem("xj.unread") || "{}");
    S.lastRead = JSON.parse(localStorage.getItem("xj.lastRead") || "{}");
  } catch (e) {
    S.unread = {};
    S.lastRead = {};
  }
}

function saveState() {
  try {
    localStorage.setItem("xj.unread", JSON.stringify(S.unread));
    localStorage.setItem("xj.lastRead", JSON.stringify(S.lastRead));
  } catch (e) { /* private mode: counts live in memory only */ }
}

function applyRole() {
  $$("[data-role-min]").forEach((el) => {
    if (!roleAtLeast(S.me.role, el.dataset.roleMin)) el.classList.add("role-hidden");
  });
}

// ------------------------------------------------------------------ loading

export async function loadAgents() {
  try {
    const r = await get("/api/agents");
    S.agents = new Map((r.agents || []).map((a) => [a.id, a]));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 403)) report(e);
  }
}

export async function loadChannels() {
  const r = await get("/api/channels");
  S.channels = new Map((r.channels || []).map((c) => [c.id, c]));
  for (const c of S.channels.values()) {
    if (c.lastMessage) S.lastMsg[c.id] = c.lastMessage;
    if (typeof c.unread === "number" && c.id !== S.active) S.unread[c.id] = c.unread;
    if (S.socket) S.socket.follow(c.id);
  }
  renderChatList();
  fetchPreviews();
}

async function loadUsers() {
  if (!roleAtLeast(S.me.role, "admin")) return;
  try {
    const r = await get("/api/users");
    S.users = new Map((r.users || []).map((u) => [u.id, u]));
  } catch (e) { /* the list is only for names */ }
}

// The last message of each channel, for the list (when the API does not send it).
async function fetchPreviews() {
  const missing = [...S.channels.values()].filter((c) => !S.lastMsg[c.id]);
  await Promise.all(missing.map(async (c) => {
    try {
      const r = await get(`/api/messages?${qs({ channelId: c.id, limit: 1 })}`);
      if (r.messages && r.messages.length) S.lastMsg[c.id] = r.messages[r.messages.length - 1];
    } catch (e) { /* preview only */ }
  }));
  renderChatList();
}

// ------------------------------------------------------------------ chat list

function channelAgents(c) {
  return (c.agentIds || []).map((id) => S.agents.get(id)).filter(Boolean);
}

function channelAvatar(c) {
  if (c.type === "dm") {
    const a = channelAgents(c)[0];
    return a ? a.avatar || a.name : c.name;
  }
  return "👥";
}

function channelLabel(c) {
  if (c.type === "dm") {
    const a = channelAgents(c)[0];
    if (a) return a.name;
  }
  return c.name;
}

function preview(m) {
  if (!m) return "";
  if (m.deleted) return t("message.deleted");
  if (m.type === "image") return t("message.image");
  if (m.type === "file") return `📎 ${fileName(m)}`;
  if (m.type === "tool_call" || m.type === "tool_result") return `🔧 ${t("tool.label")}`;
  const who = m.agentId ? agentName(m.agentId) : userName(m.userId);
  // plain text: markdown marks (emphasis, code, headings, quotes, table bars) left out
  const text = String(m.content || "").replace(/[*_`#>|~]+/g, "").replace(/\s+/g, " ").trim();
  return `${who}: ${text.slice(0, 80)}`;
}

export function renderChatList() {
  const nav = clear($("#chat-list"));
  const list = [...S.channels.values()].sort((a, b) => {
    const ta = (S.lastMsg[a.id] && S.lastMsg[a.id].createdAt) || a.lastMessageAt || a.createdAt || "";
    const tb = (S.lastMsg[b.id] && S.lastMsg[b.id].createdAt) || b.lastMessageAt || b.createdAt || "";
    return tb.localeCompare(ta);
  });
  for (const [kind, label] of [["group", "chat.groups"], ["dm", "chat.dms"]]) {
    const items = list.filter((c) => c.type === kind);
    if (!items.length) continue;
    nav.appendChild(h("h4", { class: "list-head", text: t(label) }));
    for (const c of items) {
      const unread = S.unread[c.id] || 0;
      const last = S.lastMsg[c.id];
      nav.appendChild(h("a", {
        href: `#/c/${encodeURIComponent(c.id)}`, class: `chat-item${c.id === S.active ? " active" : ""}`,
        dataset: { channelId: c.id },
      },
      avatarEl(channelAvatar(c)),
      h("span", { class: "chat-item-main" },
        h("span", { class: "chat-item-top" },
          h("span", { class: "chat-item-name", text: channelLabel(c) }),
          h("span", { class: "chat-item-time", text: last ? fmtTime(last.createdAt) : "" })),
        h("span", { class: "chat-item-last", text: preview(last) })),
      unread ? h("span", { class: "badge", text: unread > 99 ? "99+" : String(unread) }) : null));
    }
  }
  if (!list.length) nav.appendChild(h("p", { class: "muted pad", text: t("chat.noChats") }));
}

// ------------------------------------------------------------------ message view

const list = () => $("#message-list");
const scroller = () => $("#messages");

function nearBottom() {
  const s = scroller();
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

function scrollBottom() {
  const s = scroller();
  s.scrollTop = s.scrollHeight;
}

export async function openChannel(id, jumpTo) {
  const c = S.channels.get(id);
  if (!c) {
    showEmpty(true);
    return;
  }
  const switching = S.active !== id;
  S.active = id;
  $("#app").dataset.view = "chat";
  showEmpty(false);
  clear($("#chat-avatar")).appendChild(document.createTextNode(Array.from(String(channelAvatar(c))).slice(0, 2).join("")));
  $("#chat-name").textContent = channelLabel(c);
  const names = channelAgents(c).map((a) => a.name).join(" · ");
  $("#chat-sub").textContent = c.type === "group" ? names : (channelAgents(c)[0] || {}).description || "";
  const isDm = c.type === "dm";
  $("#btn-memory").hidden = !isDm;
  $("#btn-knowledge").hidden = !isDm;
  $("#btn-channel-settings").hidden = c.type !== "group";
  $("#btn-collab").hidden = c.type !== "group";
  $("#composer-input").placeholder = t(c.type === "group" ? "composer.placeholderGroup" : "composer.placeholder");
  if (switching || jumpTo) {
    clear(list());
    S.oldestId = null;
    S.hasMore = true;
    await loadPage();
    if (jumpTo) await jumpToMessage(jumpTo);
    else scrollBottom();
  }
  markRead(id);
  renderChatList();
  updateStopButton();
  panels.onChannelOpened(c);
}

function showEmpty(empty) {
  $("#empty-state").hidden = !empty;
  $("#composer").hidden = empty;
  $("#messages").hidden = empty;
  $(".chat-head").hidden = empty;
}

const readTimers = {};

function markRead(id) {
  S.unread[id] = 0;
  const last = S.lastMsg[id];
  if (last) S.lastRead[id] = last.createdAt;
  saveState();
  // the server keeps the read marker, so counts agree across devices; one request a second at most
  if (!readTimers[id]) {
    readTimers[id] = setTimeout(() => {
      delete readTimers[id];
      post(`/api/channels/${encodeURIComponent(id)}/read`, {}).catch(() => { /* retried on the next view */ });
    }, 1000);
  }
}

async function loadPage() {
  const channelId = S.active;
  const params = { channelId, limit: PAGE };
  if (S.oldestId) params.before = S.oldestId;
  const r = await get(`/api/messages?${qs(params)}`);
  if (channelId !== S.active) return 0;
  const msgs = r.messages || [];
  // The API answers oldest-first; be robust to either order.
  msgs.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0) || String(a.createdAt).localeCompare(String(b.createdAt)));
  if (msgs.length < PAGE) S.hasMore = false;
  if (!msgs.length) {
    renderHistoryTop();
    return 0;
  }
  S.oldestId = msgs[0].id;
  const frag = document.createDocumentFragment();
  for (const m of msgs) {
    if (list().querySelector(`[data-id="${CSS.escape(m.id)}"]`)) continue;
    if (m.type === "tool_result" && mergeStoredResult(m, frag)) continue;
    frag.appendChild(messageEl(m));
  }
  list().insertBefore(frag, list().firstChild);
  if (!S.lastMsg[channelId] || (msgs[msgs.length - 1].createdAt >= (S.lastMsg[channelId].createdAt || ""))) {
    S.lastMsg[channelId] = msgs[msgs.length - 1];
  }
  renderHistoryTop();
  return msgs.length;
}

// A stored tool call and its stored result are one card, as they were live.
function mergeStoredResult(m, frag) {
  const meta = m.metadata || {};
  if (!meta.callId) return false;
  const sel = `.tool-card[data-call-id="${CSS.escape(meta.callId)}"]`;
  const card = frag.querySelector(sel) || list().querySelector(sel);
  if (!card) return false;
  const failed = meta.isError || meta.error || meta.status === "error";
  setToolResult(card, meta.result ?? m.content, failed ? "error" : "completed");
  return true;
}

function renderHistoryTop() {
  const top = clear($("#history-top"));
  top.appendChild(h("span", { class: "muted", text: S.hasMore ? t("chat.loadingOlder") : t("chat.historyStart") }));
}

async function loadOlder() {
  if (S.loadingOlder || !S.hasMore || !S.active) return;
  S.loadingOlder = true;
  const s = scroller();
  const before = s.scrollHeight - s.scrollTop;
  try {
    await loadPage();
    s.scrollTop = s.scrollHeight - before;
  } catch (e) {
    report(e);
  } finally {
    S.loadingOlder = false;
  }
}

async function jumpToMessage(msgId) {
  for (let i = 0; i < 40; i++) {
    const el = list().querySelector(`[data-id="${CSS.escape(msgId)}"]`);
    if (el) {
      el.scrollIntoView({ block: "center" });
      el.classList.add("flash");
      setTimeout(() => el.classList.remove("flash"), 2500);
      return true;
    }
    if (!S.hasMore) break;
    await loadPage();
  }
  toast(t("search.notFound"), "error");
  return false;
}

// ------------------------------------------------------------------ one message

export function fileName(m) {
  const meta = m.metadata || {};
  if (meta.name) return String(meta.name);
  const url = String(m.content || "");
  return decodeURIComponent(url.split("/").pop() || url);
}

function isOwn(m) {
  return S.me && m.userId === S.me.id && !m.agentId;
}

function toolCard(name, args, status) {
  const card = h("details", { class: "tool-card", dataset: { status, tool: name } },
    h("summary", {},
      h("span", { class: "tool-icon", text: "🔧" }),
      h("span", { class: "tool-name", text: name }),
      h("span", { class: "tool-status", text: t(`tool.${status}`) })),
    h("div", { class: "tool-section" }, h("div", { class: "tool-label", text: t("tool.arguments") }),
      h("pre", { class: "tool-args", text: typeof args === "string" ? args : JSON.stringify(args ?? {}, null, 2) })),
    h("div", { class: "tool-section tool-result-wrap", hidden: true },
      h("div", { class: "tool-label", text: t("tool.result") }), h("pre", { class: "tool-result" })));
  return card;
}

function setToolResult(card, result, status) {
  card.dataset.status = status;
  card.querySelector(".tool-status").textContent = t(`tool.${status}`);
  const wrap = card.querySelector(".tool-result-wrap");
  wrap.hidden = false;
  card.querySelector(".tool-result").textContent = typeof result === "string" ? result : JSON.stringify(result, null, 2);
}

function bodyFor(m, body) {
  if (m.deleted) {
    body.appendChild(h("em", { class: "muted", text: t("message.deleted") }));
    return;
  }
  const meta = m.metadata || {};
  if (m.type === "image") {
    const url = String(m.content || "");
    if (url.startsWith("/")) {
      body.appendChild(h("img", { class: "msg-image", src: url, alt: fileName(m), loading: "lazy" }));
    }
    return;
  }
  if (m.type === "file") {
    const url = String(m.content || "");
    body.appendChild(h("a", { class: "file-link", href: url.startsWith("/") ? url : "#", download: fileName(m) },
      h("span", { text: "📎 " }), h("span", { class: "file-name", text: fileName(m) }),
      meta.size ? h("span", { class: "muted", text: ` (${fmtBytes(meta.size)})` }) : null));
    return;
  }
  if (m.type === "tool_call") {
    const card = toolCard(meta.toolName || meta.name || "tool", meta.arguments ?? m.content, "calling");
    card.dataset.messageId = meta.replyTo || meta.messageId || "";
    if (meta.callId) card.dataset.callId = meta.callId;
    body.appendChild(card);
    return;
  }
  if (m.type === "tool_result") {
    const name = meta.toolName || meta.name || "tool";
    const failed = meta.isError || meta.error || meta.status === "error";
    const card = toolCard(name, meta.arguments ?? "", failed ? "error" : "completed");
    setToolResult(card, meta.result ?? m.content, failed ? "error" : "completed");
    body.appendChild(card);
    return;
  }
  const text = h("div", { class: "md" });
  renderInto(text, m.content || "", t);
  body.appendChild(text);
  if (m.status === "interrupted") body.appendChild(h("div", { class: "msg-flag", text: t("message.interrupted") }));
  if (m.status === "stopped") body.appendChild(h("div", { class: "msg-flag", text: t("message.stopped") }));
  if (m.status === "error") body.appendChild(h("div", { class: "msg-flag error", text: meta.error || t("message.failed") }));
}

export function messageEl(m) {
  const own = isOwn(m);
  const who = m.agentId ? S.agents.get(m.agentId) : null;
  const name = m.agentId ? agentName(m.agentId) : userName(m.userId);
  const el = h("article", {
    class: `msg${own ? " own" : ""}${m.agentId ? " agent" : ""} type-${m.type || "text"}`,
    dataset: { id: m.id, created: m.createdAt || "" },
  });
  el._msg = m;
  el.appendChild(avatarEl(who ? who.avatar || who.name : name));
  const main = h("div", { class: "msg-main" },
    h("div", { class: "msg-head" },
      h("span", { class: "msg-name", text: name }),
      h("time", { class: "msg-time", datetime: m.createdAt || "", text: fmtTime(m.createdAt) }),
      m.updatedAt && !m.deleted ? h("span", { class: "msg-edited muted", text: t("message.edited") }) : null));
  const body = h("div", { class: "msg-body" });
  bodyFor(m, body);
  main.appendChild(body);
  if (own && !m.deleted) {
    const actions = h("div", { class: "msg-actions" });
    if (m.type === "text" || !m.type) {
      actions.appendChild(h("button", { type: "button", class: "link-btn act-edit", text: t("message.edit"),
        onclick: () => startEdit(el) }));
    }
    actions.appendChild(h("button", { type: "button", class: "link-btn act-delete", text: t("message.delete"),
      onclick: () => deleteMessage(el) }));
    main.appendChild(actions);
  }
  el.appendChild(main);
  if (m.status === "streaming") {
    el.classList.add("streaming");
    body.appendChild(h("span", { class: "dots" }, h("i"), h("i"), h("i")));
  }
  return el;
}

function replaceMessage(m) {
  const old = list().querySelector(`[data-id="${CSS.escape(m.id)}"]`);
  if (!old) return false;
  const merged = { ...old._msg, ...m };
  const el = messageEl(merged);
  // keep live tool cards of a streamed reply
  old.querySelectorAll(".live-tools").forEach((n) => el.querySelector(".msg-body").prepend(n));
  old.replaceWith(el);
  return true;
}

function startEdit(el) {
  const m = el._msg;
  const body = el.querySelector(".msg-body");
  if (el.querySelector(".edit-form")) return;
  const ta = h("textarea", { class: "edit-input", value: m.content || "" });
  const form = h("form", { class: "edit-form" }, ta,
    h("div", { class: "row" },
      h("button", { type: "submit", class: "primary", text: t("common.save") }),
      h("button", { type: "button", text: t("common.cancel"), onclick: () => { form.remove(); body.hidden = false; } })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const content = ta.value.trim();
    if (!content) return;
    try {
      const r = await put(`/api/messages/${encodeURIComponent(m.id)}`, { content });
      replaceMessage(r.message || { ...m, content, updatedAt: new Date().toISOString() });
    } catch (e) {
      report(e);
    }
  });
  body.hidden = true;
  body.after(form);
  ta.focus();
}

async function deleteMessage(el) {
  if (!window.confirm(t("message.confirmDelete"))) return;
  const m = el._msg;
  try {
    await del(`/api/messages/${encodeURIComponent(m.id)}`);
    replaceMessage({ ...m, deleted: true, content: "" });
  } catch (e) {
    report(e);
  }
}

function appendMessage(m) {
  if (replaceMessage(m)) return;
  const stick = nearBottom() || isOwn(m);
  list().appendChild(messageEl(m));
  if (stick) scrollBottom();
}

// ------------------------------------------------------------------ streaming

function streamEl(data) {
  let el = list().querySelector(`[data-id="${CSS.escape(data.messageId)}"]`);
  if (!el && data.channelId === S.active) {
    el = messageEl({ id: data.messageId, channelId: data.channelId, agentId: data.agentId, content: "",
      type: "text", status: "streaming", createdAt: new Date().toISOString() });
    const stick = nearBottom();
    list().appendChild(el);
    if (stick) scrollBottom();
  }
  return el;
}

function renderStream(st) {
  if (st.pending) return;
  st.pending = true;
  requestAnimationFrame(() => {
    st.pending = false;
    const el = list().querySelector(`[data-id="${CSS.escape(st.messageId)}"]`);
    if (!el) return;
    let md = el.querySelector(".msg-body > .md");
    if (!md) {
      md = h("div", { class: "md" });
      el.querySelector(".msg-body").appendChild(md);
    }
    const stick = nearBottom();
    renderInto(md, st.text, t);
    const dots = el.querySelector(".msg-body > .dots");
    if (dots && st.text) dots.remove();
    if (stick) scrollBottom();
  });
}

function liveTools(el) {
  let box = el.querySelector(".live-tools");
  if (!box) {
    box = h("div", { class: "live-tools" });
    el.querySelector(".msg-body").prepend(box);
  }
  return box;
}

export function updateStopButton() {
  const running = [...S.streams.values()].some((s) => s.channelId === S.active);
  $("#btn-stop").hidden = !running;
  if (running) setThinking(false);
}

let thinkingTimer = null;
function setThinking(on, who) {
  clearTimeout(thinkingTimer);
  $("#thinking").hidden = !on;
  if (on) {
    $("#thinking-text").textContent = who ? t("chat.thinkingWho", { name: who }) : t("chat.thinking");
    scrollBottom();
    thinkingTimer = setTimeout(() => setThinking(false), 45000);
  }
}

// ------------------------------------------------------------------ frames

function bumpUnread(channelId, m) {
  S.lastMsg[channelId] = m;
  if (channelId !== S.active || document.hidden) {
    if (!isOwn(m)) S.unread[channelId] = (S.unread[channelId] || 0) + 1;
  }
  saveState();
  renderChatList();
}

function onFrame(frame) {
  const d = frame.data || {};
  const channelId = frame.channelId || d.channelId;
  switch (frame.type) {
    case "message": {
      if (!S.channels.has(channelId)) {
        loadChannels().catch(() => {});
        return;
      }
      bumpUnread(channelId, d);
      if (channelId === S.active) {
        if ((d.type === "tool_call" || d.type === "tool_result") && boundLiveCard(d)) return;
        appendMessage(d);
        if (d.agentId) {
          setThinking(false);
        }
        if (!document.hidden) markRead(channelId);
      }
      break;
    }
    case "message_updated":
      if (channelId === S.active) replaceMessage(d.message || d);
      break;
    case "message_deleted":
      if (channelId === S.active) replaceMessage({ id: d.id || d.messageId, deleted: true, content: "" });
      break;
    case "stream_start": {
      const st = { messageId: d.messageId, channelId, agentId: d.agentId, text: "" };
      S.streams.set(d.messageId, st);
      if (channelId === S.active) {
        streamEl({ ...d, channelId });
        updateStopButton();
      }
      break;
    }
    case "stream_chunk": {
      const st = S.streams.get(d.messageId);
      if (!st) return;
      st.text += d.content || "";
      if (st.channelId === S.active) renderStream(st);
      break;
    }
    case "stream_end": {
      const st = S.streams.get(d.messageId);
      S.streams.delete(d.messageId);
      const chan = (st && st.channelId) || channelId;
      const final = {
        id: d.messageId, channelId: chan, agentId: (st && st.agentId) || d.agentId,
        content: d.content !== undefined ? d.content : (st ? st.text : ""), type: "text",
        status: d.status || (d.interrupted ? "interrupted" : "done"),
      };
      if (chan === S.active) {
        const el = list().querySelector(`[data-id="${CSS.escape(d.messageId)}"]`);
        if (el) {
          final.createdAt = el._msg.createdAt;
          replaceMessage(final);
        }
        updateStopButton();
      }
      if (chan) bumpUnread(chan, { ...final, createdAt: final.createdAt || new Date().toISOString() });
      break;
    }
    case "tool_call": {
      if (channelId !== S.active) return;
      const el = streamEl({ messageId: d.messageId, channelId, agentId: (S.streams.get(d.messageId) || {}).agentId });
      if (!el) return;
      const box = liveTools(el);
      const key = d.callId || d.toolName;
      let card = box.querySelector(`.tool-card[data-key="${CSS.escape(key)}"]:not([data-done])`);
      if (!card) {
        card = toolCard(d.toolName, d.arguments, d.status || "calling");
        card.dataset.key = key;
        card.dataset.live = "1";
        box.appendChild(card);
      }
      if (d.status === "error") {
        setToolResult(card, d.error || d.result || t("tool.error"), "error");
        card.dataset.done = "1";
      }
      if (nearBottom()) scrollBottom();
      break;
    }
    case "tool_result": {
      if (channelId !== S.active) return;
      const el = list().querySelector(`[data-id="${CSS.escape(d.messageId)}"]`);
      if (!el) return;
      const key = d.callId || d.toolName;
      const box = liveTools(el);
      let card = box.querySelector(`.tool-card[data-key="${CSS.escape(key)}"]:not([data-done])`);
      if (!card) {
        card = toolCard(d.toolName, d.arguments ?? "", "completed");
        card.dataset.key = key;
        box.appendChild(card);
      }
      setToolResult(card, d.result, d.status === "error" || d.error ? "error" : "completed");
      card.dataset.done = "1";
      break;
    }
    case "collab_status":
      panels.onCollab({ ...d, channelId });
      break;
    case "typing":
      break;
    case "rag_progress":
      panels.onRagProgress(d);
      break;
    case "resync":
      onResync(d);
      break;
    case "unsubscribed":
      if (d.reason !== "removed") break;
      S.channels.delete(d.channelId);
      if (S.active === d.channelId) {
        S.active = null;
        showEmpty(true);
      }
      renderChatList();
      break;
    case "error":
      if (d.code && d.code !== "unknown_type") toast(d.message || d.error || d.code, "error");
      if (d.messageId && S.streams.has(d.messageId)) {
        S.streams.delete(d.messageId);
        updateStopButton();
      }
      setThinking(false);
      break;
    default:
      break;
  }
}

// Stored tool messages duplicate the live cards we already show: bind instead of repeating.
function boundLiveCard(m) {
  const meta = m.metadata || {};
  const name = meta.toolName || meta.name;
  const want = m.type === "tool_call" ? ".tool-card[data-live]:not([data-bound-call])"
    : ".tool-card[data-live]:not([data-bound-result])";
  const card = $$(want, list()).find((c) => (meta.callId ? c.dataset.key === meta.callId : c.dataset.tool === name));
  if (!card) return false;
  card.dataset[m.type === "tool_call" ? "boundCall" : "boundResult"] = "1";
  return true;
}

async function onResync(d) {
  const ids = d.channelId ? [d.channelId] : (d.channels || []);
  if (S.active && (ids.includes(S.active) || !ids.length)) {
    clear(list());
    S.oldestId = null;
    S.hasMore = true;
    try {
      await loadPage();
      scrollBottom();
    } catch (e) {
      report(e);
    }
  }
  for (const id of ids) delete S.lastMsg[id];
  fetchPreviews();
}

function onConnState(state) {
  const dot = $("#conn-dot");
  dot.dataset.state = state;
  dot.title = t(`conn.${state}`);
  const banner = $("#conn-banner");
  banner.hidden = state === "online" || state === "connecting";
  banner.textContent = t(`conn.${state}`);
}

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

function mentionCandidates(c, prefix) {
  const p = prefix.toLowerCase();
  const agents = channelAgents(c).filter((a) => a.name.toLowerCase().includes(p));
  if ("all".startsWith(p)) agents.push({ id: "@all", name: "all", avatar: "📣", description: t("mention.all") });
  return agents.slice(0, 8);
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
      onmousedown: (ev) => { ev.preventDefault(); pickMention(i); },
    }, avatarEl(a.avatar || a.name, "avatar small"), h("span", { class: "mention-name", text: a.name }),
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

// ------------------------------------------------------------------ search

async function search(q) {
  if (!q.trim()) return;
  try {
    const r = await get(`/api/messages/search?${qs({ q })}`);
    panels.showSearch(q, r.results || r.messages || [], (m) => {
      location.hash = `#/c/${encodeURIComponent(m.channelId)}/m/${encodeURIComponent(m.id)}`;
    });
  } catch (e) {
    report(e);
  }
}

// ------------------------------------------------------------------ routing

async function route() {
  const hash = location.hash || "";
  let m;
  if ((m = /^#\/c\/([^/]+)(?:\/m\/([^/]+))?$/.exec(hash))) {
    await openChannel(decodeURIComponent(m[1]), m[2] ? decodeURIComponent(m[2]) : null);
  } else if (hash === "#/settings") {
    panels.openSettings();
  } else if (hash === "#/agents") {
    panels.openAgents();
  } else if (hash === "#/account") {
    panels.openAccount();
  } else if (!S.active) {
    const first = [...S.channels.values()][0];
    if (first && window.matchMedia("(min-width: 800px)").matches) location.replace(`#/c/${encodeURIComponent(first.id)}`);
    else showEmpty(true);
  }
}

// ------------------------------------------------------------------ wiring

function wire() {
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
  scroller().addEventListener("scroll", () => { if (scroller().scrollTop < 80) loadOlder(); });
  list().addEventListener("click", (ev) => {
    const img = ev.target.closest(".msg-image");
    if (img) {
      $("#lightbox-img").src = img.src;
      $("#lightbox").hidden = false;
    }
  });
  $("#lightbox").addEventListener("click", () => { $("#lightbox").hidden = true; });
  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search($("#search-input").value);
  });
  $("#btn-back").addEventListener("click", () => {
    $("#app").dataset.view = "list";
    S.active = null;
    history.replaceState(null, "", "#/");
    renderChatList();
  });
  $("#btn-new-dm").addEventListener("click", () => panels.newDm());
  $("#btn-new-group").addEventListener("click", () => panels.editGroup(null));
  $("#btn-channel-settings").addEventListener("click", () => panels.editGroup(S.channels.get(S.active)));
  $("#btn-memory").addEventListener("click", () => panels.openMemory(channelAgents(S.channels.get(S.active))[0]));
  $("#btn-knowledge").addEventListener("click", () => panels.openKnowledge(channelAgents(S.channels.get(S.active))[0]));
  $("#btn-collab").addEventListener("click", () => panels.openCollab());
  $("#btn-agents").addEventListener("click", () => { location.hash = "#/agents"; });
  $("#btn-settings").addEventListener("click", () => { location.hash = "#/settings"; });
  $("#btn-account").addEventListener("click", () => { location.hash = "#/account"; });
  $("#panel-close").addEventListener("click", panels.closePanel);
  $("#lang-select").addEventListener("change", (ev) => {
    setLang(ev.target.value);
    location.reload();
  });
  $("#btn-theme").addEventListener("click", cycleTheme);
  $("#btn-logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  window.addEventListener("xj:unauthorized", () => { location.href = "/login"; });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && S.active) {
      markRead(S.active);
      renderChatList();
    }
  });
}

export function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  try { localStorage.setItem("xj.theme", theme); } catch (e) { /* ignore */ }
  syncCodeTheme();
}

function syncCodeTheme() {
  const th = document.documentElement.dataset.theme;
  const dark = th === "dark" || (th === "auto" && window.matchMedia("(prefers-color-scheme: dark)").matches);
  $("#hl-dark").disabled = !dark;
  $("#hl-light").disabled = dark;
}

function cycleTheme() {
  const order = ["auto", "light", "dark"];
  const cur = document.documentElement.dataset.theme || "auto";
  const next = order[(order.indexOf(cur) + 1) % order.length];
  applyTheme(next);
  toast(t(`theme.${next}`));
}

export async function logout() {
  try { await post("/api/logout"); } catch (e) { /* leaving anyway */ }
  if (S.socket) S.socket.close();
  location.href = "/login";
}

async function main() {
  await loadLang(boot.lang);
  translate();
  syncCodeTheme();
  readState();
  try {
    const r = await get("/api/me");
    S.me = r.user || r;
  } catch (e) {
    location.href = "/login";
    return;
  }
  $("#me-name").textContent = S.me.displayName || S.me.username;
  document.body.dataset.role = S.me.role;
  applyRole();
  wire();
  await Promise.all([loadAgents(), loadUsers()]);
  S.socket = new Socket(onFrame, onConnState);
  S.socket.connect();
  try {
    await loadChannels();
  } catch (e) {
    report(e);
  }
  await route();
  document.body.dataset.ready = "app";
  if ("serviceWorker" in navigator && boot.sw !== false) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
  }
}

main();
