// The sidebar: loading agents, people and chats, the chat list with previews, the connection dot.
import { ApiError, get, qs } from "./api.js";
import { $, avatarEl, clear, fmtTime, h, initials, roleAtLeast } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, fileName, person, personAvatar, report, userName } from "./state.js";

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

// The people the caller may see (names, avatars, roles) and which model answers; admins also get
// every account (deactivated ones too), for the names of people who left.
export async function loadUsers() {
  try {
    const r = await get("/api/team");
    S.people = new Map((r.people || []).map((u) => [u.id, u]));
    S.team = r;
  } catch (e) { report(e); }
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

// The other person of a DM between two people (null for an agent's DM).
export function dmPerson(c) {
  if (c.type !== "dm" || (c.agentIds || []).length) return null;
  const other = (c.userIds || []).find((id) => !S.me || id !== S.me.id);
  return other ? person(other) || { id: other, displayName: t("chat.someone") } : null;
}

// A DM whose other side is gone (its agent was deleted): kept to read, closed for new messages.
export function isArchived(c) {
  return c.type === "dm" && ((c.agentIds || []).length + (c.userIds || []).length) < 2;
}

export function channelAvatar(c) {
  if (c.type === "dm") {
    const p = dmPerson(c);
    if (p) return personAvatar(p);
    const a = channelAgents(c)[0];
    return a ? a.avatar || a.name : "🗄";
  }
  return initials(c.name); // a group: the first letters of its name
}

export function channelLabel(c) {
  if (c.type === "dm" && !c.parentId) {
    const p = dmPerson(c);
    if (p) return p.displayName || p.username;
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
  if (!list.length) {
    const line = roleAtLeast(S.me.role, "member") ? "chat.noChats" : "chat.noChatsGuest";
    nav.appendChild(h("p", { class: "muted pad", id: "no-chats", text: t(line) }));
  }
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
      isArchived(c) ? h("span", { class: "pill archived", text: t("chat.archived") }) : null,
      h("span", { class: "chat-item-time", text: last ? fmtTime(last.createdAt) : "" })),
    h("span", { class: "chat-item-last", text: c.archived ? t("topic.archived") : preview(last) })),
  S.mentions[c.id] ? h("span", { class: "badge mention", title: t("chat.mentioned"), text: "@" }) : null,
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
