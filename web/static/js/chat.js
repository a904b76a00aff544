// The chat view: opening a chat, history pages, live messages, streaming replies and the frames
// that drive them.
import { get, post, qs } from "./api.js";
import { $, $$, avatarEl, clear, h, roleAtLeast, toast } from "./dom.js";
import { t } from "./i18n.js";
import { renderInto } from "./render.js";
import { S, emit, isOwn, report, saveState, userName } from "./state.js";
import { channelAgents, channelAvatar, channelLabel, dmPerson, fetchPreviews, isArchived, loadChannels,
  renderChatList } from "./sidebar.js";
import { approvalBox, list, mergeStoredResult, messageEl, replaceMessage, setToolResult, setToolStatus,
  toolCard } from "./messages.js";

const PAGE = 50;

export const scroller = () => $("#messages");

function nearBottom() {
  const s = scroller();
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

export function scrollBottom() {
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
  $("#chat-avatar").replaceWith(Object.assign(avatarEl(channelAvatar(c)), { id: "chat-avatar" }));
  $("#chat-name").textContent = channelLabel(c);
  const other = dmPerson(c);
  const archived = isArchived(c); // a DM whose agent or person is gone: read-only
  const parent = c.parentId ? S.channels.get(c.parentId) : null;
  $("#chat-sub").textContent = parent ? `↳ ${channelLabel(parent)}` : c.type === "group" ? groupLine(c)
    : archived ? t("chat.archivedLine") : other ? t(`role.${other.role || "member"}`)
      : (channelAgents(c)[0] || {}).description || "";
  const agentDm = c.type === "dm" && !other && !archived;
  $("#btn-memory").hidden = !agentDm;
  $("#btn-knowledge").hidden = !agentDm;
  $("#btn-channel-settings").hidden = c.type !== "group" || !canManage(c);
  $("#btn-members").hidden = c.type !== "group";
  $("#btn-collab").hidden = c.type !== "group";
  $("#btn-workflows").hidden = c.type !== "group";
  $("#btn-topic").hidden = !!c.archived || archived || !canWrite(c);
  $("#btn-archive").hidden = archived || !canManage(c);
  $("#btn-archive").textContent = t(c.archived ? "topic.unarchive" : "topic.archive");
  // a topic or a branch (a conversation under another) can be renamed and deleted by who may manage it
  $("#btn-rename-topic").hidden = !c.parentId || archived || !canManage(c);
  $("#btn-delete-topic").hidden = !c.parentId || !canManage(c);
  $("#composer").hidden = archived || !canWrite(c);
  $("#composer").classList.toggle("archived", !!c.archived);
  $("#archived-line").hidden = !archived;
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
  focusComposer();
  emit("channel:opened", c);
}

export function focusComposer() {
  if (!$("#composer").hidden) $("#composer-input").focus();
}

// "3 people · 2 agents: 编辑 · 翻译官"
function groupLine(c) {
  const people = (c.userIds || []).length;
  const agents = channelAgents(c).map((a) => a.name);
  const parts = [t("group.peopleCount", { n: people })];
  if (agents.length) parts.push(`${t("group.agentsCount", { n: agents.length })}: ${agents.join(" · ")}`);
  return parts.join(" · ");
}

// The built-in rules of the server (auth.builtin_allows), to show only buttons that work.
export function canManage(c) {
  return roleAtLeast(S.me.role, "admin") || (c.createdBy === S.me.id && (c.userIds || []).includes(S.me.id));
}

function canWrite(c) {
  return (c.userIds || []).includes(S.me.id) && !(c.readOnlyUserIds || []).includes(S.me.id);
}

export function showEmpty(empty) {
  $("#empty-state").hidden = !empty;
  $("#composer").hidden = empty;
  $("#archived-line").hidden = true;
  if (empty) emit("home:shown");
  $("#messages").hidden = empty;
  $(".chat-head").hidden = empty;
}

const readTimers = {};

export function markRead(id) {
  S.unread[id] = 0;
  delete S.mentions[id];
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
  // versions of one reply show as one message (the current one, where the first stood) with 1/2/3
  const groups = new Map();
  for (const m of msgs) if (m.versionGroup) (groups.get(m.versionGroup) || groups.set(m.versionGroup, []).get(m.versionGroup)).push(m);
  // a reply is stored after its tool calls: those whose reply comes later in the page move into it below
  const waiting = [];
  for (const m of msgs) {
    if (list().querySelector(`[data-id="${CSS.escape(m.id)}"]`)) continue;
    if (m.type === "tool_result" && mergeStoredResult(m, frag)) continue;
    if ((m.type === "tool_call" || m.type === "tool_result") && intoReply(m, frag)) continue;
    if (m.type === "tool_call" && (m.metadata || {}).replyTo) {
      const el = messageEl(m);
      frag.appendChild(el);
      waiting.push([m, el]);
      continue;
    }
    let shown = m;
    if (m.versionGroup) {
      const versions = groups.get(m.versionGroup);
      if (versions[0] !== m) continue;
      shown = { ...(versions.find((v) => !v.superseded) || versions[versions.length - 1]), _versions: versions };
    }
    frag.appendChild(messageEl(shown));
    if (shown.status === "streaming") resumeStream(shown, r.seq, channelId);
  }
  for (const [m, el] of waiting) if (intoReply(m, frag, el)) el.remove();
  list().insertBefore(frag, list().firstChild);
  if (!S.lastMsg[channelId] || (msgs[msgs.length - 1].createdAt >= (S.lastMsg[channelId].createdAt || ""))) {
    S.lastMsg[channelId] = msgs[msgs.length - 1];
  }
  renderHistoryTop();
  if (!params.before) loadApprovals(channelId);  // calls waiting for a decision show their card again
  if (!params.before && [...S.streams.values()].some((st) => st.channelId === channelId && st.fromPage)) {
    // replies stream now: the frames after the page's seq carry the rest of their text
    S.socket.resume(channelId, r.seq, r.epoch);
  }
  updateStopButton();
  return msgs.length;
}

// A reply that was streaming when the page was read: its text so far is on screen; chunks
// numbered after the page's seq continue it (earlier ones are already in the text).
function resumeStream(m, seq, channelId) {
  const st = S.streams.get(m.id);
  if (st && !st.fromPage) return;
  S.streams.set(m.id, { messageId: m.id, channelId, agentId: m.agentId, text: m.content || "", fromSeq: seq,
    fromPage: true, createdAt: m.createdAt, versionGroup: m.versionGroup, replyTo: (m.metadata || {}).replyTo });
}

// Stored tool calls and results belong inside the reply they were part of, as they were live.
function intoReply(m, frag, shown = null) {
  const meta = m.metadata || {};
  if (!meta.replyTo) return false;
  const sel = `[data-id="${CSS.escape(meta.replyTo)}"]`;
  const reply = frag.querySelector(sel) || list().querySelector(sel);
  if (!reply) return false;
  const card = (shown || messageEl(m)).querySelector(".tool-card");
  if (!card) return false;
  liveTools(reply).appendChild(card);
  return true;
}


function renderHistoryTop() {
  const top = clear($("#history-top"));
  top.appendChild(h("span", { class: "muted", text: S.hasMore ? t("chat.loadingOlder") : t("chat.historyStart") }));
}

export async function loadOlder() {
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

export function appendMessage(m) {
  if (replaceMessage(m)) return;
  const stick = nearBottom() || isOwn(m);
  list().appendChild(messageEl(m));
  if (stick) scrollBottom();
}

// ------------------------------------------------------------------ streaming

function streamEl(data) {
  let el = list().querySelector(`[data-id="${CSS.escape(data.messageId)}"]`);
  if (!el && data.channelId === S.active) {
    const m = { id: data.messageId, channelId: data.channelId, agentId: data.agentId, content: "",
      type: "text", status: "streaming", createdAt: data.createdAt || new Date().toISOString(),
      versionGroup: data.versionGroup, metadata: { replyTo: data.replyTo } };
    const old = data.versionGroup && list().querySelector(`.msg[data-group="${CSS.escape(data.versionGroup)}"]`);
    if (old) {  // a new version of a reply: it takes the place of the one shown
      const versions = [...((old._msg && old._msg._versions) || [old._msg])].filter(Boolean);
      m._versions = [...versions.map((v) => ({ ...v, superseded: true })), m];
      el = messageEl(m);
      old.replaceWith(el);
      return el;
    }
    el = messageEl(m);
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
    if (S.streams.get(st.messageId) !== st) return;  // ended meanwhile: the finished message is on screen
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
export function setThinking(on, who) {
  clearTimeout(thinkingTimer);
  $("#thinking").hidden = !on;
  if (on) {
    $("#thinking-text").textContent = who ? t("chat.thinkingWho", { name: who }) : t("chat.thinking");
    scrollBottom();
    thinkingTimer = setTimeout(() => setThinking(false), 45000);
  }
}

// ------------------------------------------------------------------ frames

// Does this message @mention the caller (by display name or username, or @all)?
export function mentionsMe(m) {
  if (!S.me || isOwn(m) || m.type !== "text") return false;
  const text = String(m.content || "").toLowerCase();
  const names = [S.me.displayName, S.me.username].filter(Boolean).map((n) => `@${n.toLowerCase()}`);
  return names.some((n) => text.includes(n));
}

function notifyMention(channelId, m) {
  S.mentions[channelId] = (S.mentions[channelId] || 0) + 1;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  if (!document.hidden && channelId === S.active) return;
  const c = S.channels.get(channelId);
  const who = m.agentId ? (S.agents.get(m.agentId) || {}).name : userName(m.userId);
  try {
    const n = new Notification(t("notify.mention", { name: who || "", chat: c ? channelLabel(c) : "" }),
      { body: String(m.content || "").slice(0, 140), tag: `xj-${channelId}` });
    n.onclick = () => { window.focus(); location.hash = `#/c/${encodeURIComponent(channelId)}`; };
  } catch (e) { /* notifications unavailable on this device */ }
}

function bumpUnread(channelId, m) {
  S.lastMsg[channelId] = m;
  if (channelId !== S.active || document.hidden) {
    if (!isOwn(m)) S.unread[channelId] = (S.unread[channelId] || 0) + 1;
    if (mentionsMe(m)) notifyMention(channelId, m);
  }
  saveState();
  renderChatList();
}

export function onFrame(frame) {
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
      if (S.streams.has(d.messageId)) break;  // replayed after a resume: it is on screen already
      const st = { messageId: d.messageId, channelId, agentId: d.agentId, text: "" };
      S.streams.set(d.messageId, st);
      if (channelId === S.active) {
        setThinking(false);
        streamEl({ ...d, channelId });
        updateStopButton();
      }
      break;
    }
    case "stream_chunk": {
      const st = S.streams.get(d.messageId);
      if (!st) return;
      if (st.fromSeq !== undefined && frame.seq !== undefined && frame.seq <= st.fromSeq) return;  // in the page
      if (frame.seq !== undefined) st.fromSeq = frame.seq;
      st.text += d.content || "";
      if (st.channelId === S.active) renderStream(st);
      break;
    }
    case "stream_end": {
      const st = S.streams.get(d.messageId);
      S.streams.delete(d.messageId);
      const chan = (st && st.channelId) || channelId;
      const el = chan === S.active ? list().querySelector(`[data-id="${CSS.escape(d.messageId)}"]`) : null;
      const shown = (el && el._msg) || {};
      const final = {
        id: d.messageId, channelId: chan, agentId: (st && st.agentId) || shown.agentId || d.agentId,
        content: d.content !== undefined ? d.content : (st ? st.text : shown.content || ""), type: "text",
        status: d.status || (d.interrupted ? "interrupted" : "done"),
        metadata: { ...(shown.metadata || {}), ...(d.error ? { error: d.error } : {}) },
      };
      if (!st && !el) break;  // a replayed end of a reply already finished on screen
      if (chan === S.active) {
        setThinking(false);
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
      } else if (d.status === "calling" || d.status === "completed") {
        setToolStatus(card, d.status);
        const args = card.querySelector(".tool-args");
        if (args && d.arguments !== undefined) args.textContent = typeof d.arguments === "string" ? d.arguments
          : JSON.stringify(d.arguments ?? {}, null, 2);
      } else if (d.status) {
        setToolStatus(card, d.status);
      }
      if (d.approvalId) card.dataset.approvalId = d.approvalId;
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
    case "tool_approval":
      if (channelId === S.active) showApproval(d);
      break;
    case "collab_status":
      emit("collab_status", { ...d, channelId });
      break;
    case "workflow_run":
      emit("workflow_run", d);
      break;
    case "typing":
      break;
    case "rag_progress":
      emit("rag_progress", d);
      break;
    case "resync":
      onResync(d);
      break;
    case "channel_added":
      loadChannels().catch(() => {});
      break;
    case "channel_updated":  // renamed, agents or default changed (by this person in another tab or by others)
      loadChannels().then(() => {
        const c = S.channels.get(channelId);
        if (c && S.active === channelId) $("#chat-name").textContent = channelLabel(c);
      }).catch(() => {});
      break;
    case "channel_deleted": {
      const gone = S.channels.get(channelId);
      S.channels.delete(channelId);
      if (S.active === channelId) {
        S.active = null;
        location.hash = gone && gone.parentId && S.channels.has(gone.parentId)
          ? `#/c/${encodeURIComponent(gone.parentId)}` : "#/home";
      }
      renderChatList();
      break;
    }
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
      // a failed reply shows as the agent's message with its reason; other errors as a toast
      if (d.code && d.code !== "unknown_type" && !(d.agentId && d.messageId)) toast(d.message || d.error || d.code, "error");
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

// ------------------------------------------------------------------ tool approvals

// The server's built-in rule (auth.builtin_allows, tool.approve): whose message started the turn while
// he may post, who manages the channel, or an admin/owner.
export function mayDecideApproval(a, c) {
  if (!c || !S.me) return false;
  return canManage(c) || (a.requestedBy === S.me.id && canWrite(c));
}

// An approval request (a tool_approval frame, or a pending one read with the page) on its call's card.
export function showApproval(a) {
  const c = S.channels.get(a.channelId);
  const el = streamEl({ messageId: a.messageId, channelId: a.channelId, agentId: a.agentId });
  if (!el) return;
  const box = liveTools(el);
  let card = box.querySelector(`.tool-card[data-key="${CSS.escape(a.callId)}"]`)
    || box.querySelector(`.tool-card[data-approval-id="${CSS.escape(a.id)}"]`);
  if (!card) {
    card = toolCard(a.toolName, a.arguments, a.status === "pending" ? "awaiting_approval" : "calling");
    card.dataset.key = a.callId;
    card.dataset.live = "1";
    box.appendChild(card);
  }
  approvalBox(card, a, {
    mayDecide: mayDecideApproval(a, c),
    requester: userName,
    decide: (decision, args) => post(`/api/approvals/${encodeURIComponent(a.id)}`,
      args === undefined ? { decision } : { decision, arguments: args }),
  });
  if (a.status === "pending") {
    setThinking(false);  // the turn waits for a person now, not for the model
    if (nearBottom()) scrollBottom();
  }
}

async function loadApprovals(channelId) {
  try {
    const r = await get(`/api/approvals?${qs({ channelId })}`);
    if (channelId !== S.active) return;
    for (const a of (r.approvals || []).reverse()) showApproval(a);
  } catch (e) {
    report(e);
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

