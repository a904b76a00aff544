// The app's shared state, a small event bus, and the name helpers every view uses.
import { ApiError } from "./api.js";
import { initials, toast } from "./dom.js";
import { t } from "./i18n.js";

export const S = {
  me: null,
  agents: new Map(),
  users: new Map(), // admins: every account (GET /api/users)
  people: new Map(), // the people the caller may see (GET /api/team)
  team: null, // {model: {model, builtin, configured}}
  mentions: {}, // channelId -> mentions of the caller not yet read
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

// ------------------------------------------------------------------ event bus
// Views talk through named events instead of importing each other:
// "channel:opened" (channel), "collab_status" (frame data), "rag_progress" (frame data).

const bus = new EventTarget();

export function on(name, fn) {
  bus.addEventListener(name, (ev) => fn(ev.detail));
}

export function emit(name, detail) {
  bus.dispatchEvent(new CustomEvent(name, { detail }));
}

// ------------------------------------------------------------------ names

export function agentName(id) {
  const a = S.agents.get(id);
  return a ? a.name : id || "";
}

export function person(id) {
  if (S.me && id === S.me.id) return S.me;
  return S.people.get(id) || S.users.get(id) || null;
}

export function userName(id) {
  const u = person(id);
  return u ? (u.displayName || u.username) : t("chat.someone");
}

// What avatarEl shows for a person: the uploaded image or chosen text, else the name's initials.
export function personAvatar(u) {
  if (!u) return "?";
  return u.avatar || initials(u.displayName || u.username);
}

export function fileName(m) {
  const meta = m.metadata || {};
  if (meta.name) return String(meta.name);
  const url = String(m.content || "");
  return decodeURIComponent(url.split("/").pop() || url);
}

export function isOwn(m) {
  return S.me && m.userId === S.me.id && !m.agentId;
}

// ------------------------------------------------------------------ errors

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

// ------------------------------------------------------------------ unread counts kept in this browser

export function readState() {
  try {
    S.unread = JSON.parse(localStorage.getItem("xj.unread") || "{}");
    S.lastRead = JSON.parse(localStorage.getItem("xj.lastRead") || "{}");
    S.mentions = JSON.parse(localStorage.getItem("xj.mentions") || "{}");
  } catch (e) {
    S.unread = {};
    S.lastRead = {};
    S.mentions = {};
  }
}

export function saveState() {
  try {
    localStorage.setItem("xj.unread", JSON.stringify(S.unread));
    localStorage.setItem("xj.lastRead", JSON.stringify(S.lastRead));
    localStorage.setItem("xj.mentions", JSON.stringify(S.mentions));
  } catch (e) { /* private mode: counts live in memory only */ }
}
