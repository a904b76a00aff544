// The sidebar: loading agents, people and chats, the chat list with previews, the connection dot.
import { ApiError, get, qs } from "./api.js";
import { $, avatarEl, clear, fmtTime, h, roleAtLeast } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, fileName, report, userName } from "./state.js";

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

export async function loadUsers() {
  if (!roleAtLeast(S.me.role, "admin")) return;
  try {
    const r = await get("/api/users");
    S.users = new Map((r.users || []).map((u) => [u.id, u]));
  } catch (e) { /* the list is only for names */ }
}

// The last message of each channel, for the list (when the API does not send it).
export async function fetchPreviews() {
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

export function channelAgents(c) {
  return (c.agentIds || []).map((id) => S.agents.get(id)).filter(Boolean);
}

export function channelAvatar(c) {
  if (c.type === "dm") {
    const a = channelAgents(c)[0];
    return a ? a.avatar || a.name : c.name;
  }
  return "👥";
}

export function channelLabel(c) {
  if (c.type === "dm" && !c.parentId) {
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
    // topics and branches sit under their conversation, as a tree
    const shown = new Set(items.map((c) => c.id));
    const kids = new Map();
    for (const c of items) {
      const parent = c.parentId && shown.has(c.parentId) ? c.parentId : null;
      (kids.get(parent) || kids.set(parent, []).get(parent)).push(c);
    }
    const walk = (parent, depth) => {
      for (const c of kids.get(parent) || []) {
        nav.appendChild(chatItem(c, depth));
        walk(c.id, depth + 1);
      }
    };
    walk(null, 0);
  }
  if (!list.length) nav.appendChild(h("p", { class: "muted pad", text: t("chat.noChats") }));
}

function chatItem(c, depth) {
  const unread = S.unread[c.id] || 0;
  const last = S.lastMsg[c.id];
  return h("a", {
    href: `#/c/${encodeURIComponent(c.id)}`,
    class: `chat-item${c.id === S.active ? " active" : ""}${c.parentId ? " child" : ""}${c.archived ? " archived" : ""}`,
    dataset: { channelId: c.id, depth: String(Math.min(depth, 6)), parentId: c.parentId || "" },
  },
  c.parentId ? h("span", { class: "tree-mark", text: c.forkMessageId ? "↳" : "#" }) : avatarEl(channelAvatar(c)),
  h("span", { class: "chat-item-main" },
    h("span", { class: "chat-item-top" },
      h("span", { class: "chat-item-name", text: channelLabel(c) }),
      h("span", { class: "chat-item-time", text: last ? fmtTime(last.createdAt) : "" })),
    h("span", { class: "chat-item-last", text: c.archived ? t("topic.archived") : preview(last) })),
  unread ? h("span", { class: "badge", text: unread > 99 ? "99+" : String(unread) }) : null);
}

export function onConnState(state) {
  const dot = $("#conn-dot");
  dot.dataset.state = state;
  dot.title = t(`conn.${state}`);
  const banner = $("#conn-banner");
  banner.hidden = state === "online" || state === "connecting";
  banner.textContent = t(`conn.${state}`);
}
