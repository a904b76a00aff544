// Tiny DOM helpers. Text always goes in as text nodes: no user string becomes HTML here.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked" || k === "disabled" || k === "hidden" || k === "selected" || k === "required") el[k] = !!v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function toast(text, kind = "info") {
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status", text });
  document.getElementById("toasts").appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 6000 : 3000);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "2-digit", day: "2-digit" }) + " " +
      d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function avatarEl(text, cls = "avatar") {
  const a = String(text || "?").trim();
  // An uploaded image (a same-origin /uploads/ URL), else one emoji or up to two letters, always as text.
  if (/^\/uploads\/[\w.-]+\/[\w.-]+$/.test(a)) {
    return h("span", { class: `${cls} has-image` }, h("img", { src: a, alt: "", loading: "lazy" }));
  }
  const shown = Array.from(a).slice(0, 2).join("");
  return h("span", { class: cls, text: shown || "?" });
}

// A person's initials: the first letters of the first two words ("Alice Wong" → "AW"), or the
// first character of a name without spaces ("王小明" → "王").
export function initials(name) {
  const words = String(name || "?").trim().split(/\s+/).filter(Boolean);
  if (words.length > 1) return (Array.from(words[0])[0] + Array.from(words[1])[0]).toUpperCase();
  const first = Array.from(words[0] || "?")[0];
  return first.toUpperCase();
}

const RANK = { guest: 0, member: 1, admin: 2, owner: 3 };
export function roleAtLeast(role, min) {
  return (RANK[role] ?? -1) >= (RANK[min] ?? 99);
}
