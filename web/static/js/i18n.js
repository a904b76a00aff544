// Translations: web/static/i18n/{zh,en}.json, the same files the server templates use.
const LANGS = ["zh", "en"];
let dict = {};
let current = "zh";

export function lang() { return current; }

export async function loadLang(wanted) {
  current = LANGS.includes(wanted) ? wanted : "zh";
  const resp = await fetch(`/static/i18n/${current}.json`, { credentials: "same-origin" });
  dict = await resp.json();
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  return current;
}

export function setLang(l) {
  document.cookie = `lang=${l}; path=/; max-age=31536000; SameSite=Strict`;
  try { localStorage.setItem("xj.lang", l); } catch (e) { /* ignore */ }
}

export function t(key, vars) {
  let s = dict[key];
  if (s === undefined) s = key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] !== undefined ? String(vars[k]) : m));
  return s;
}

// Fill every element carrying data-i18n (text), data-i18n-placeholder or data-i18n-title.
export function translate(root = document) {
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  root.querySelectorAll("[data-i18n-title]").forEach((el) => {
    el.title = t(el.dataset.i18nTitle);
    el.setAttribute("aria-label", el.title);
  });
}
