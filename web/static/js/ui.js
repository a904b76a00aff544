// The side panel, the modal dialog, form helpers and the theme switch.
import { $, clear, h, toast } from "./dom.js";
import { t } from "./i18n.js";
import { S, report } from "./state.js";

// ------------------------------------------------------------------ panel + modal

let panelKind = null;

export function currentPanel() {
  return panelKind;
}

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

export function modal(title, body, { wide = false, id = "" } = {}) {
  const dlg = $("#modal");
  dlg.className = `modal${wide ? " wide" : ""}`;
  dlg.dataset.kind = id;
  const close = () => {
    dlg.close();
    if (/^#\/(settings|agents|account|schedules)$/.test(location.hash)) history.replaceState(null, "", S.active ? `#/c/${encodeURIComponent(S.active)}` : "#/");
  };
  clear($("#modal-body")).appendChild(h("div", { class: "modal-inner" },
    h("header", { class: "modal-head" }, h("h3", { text: title }),
      h("button", { type: "button", class: "icon-btn modal-close", title: t("common.close"), text: "×", onclick: close })),
    body));
  if (!dlg.open) dlg.showModal();
  dlg.onclose = () => {
    if (/^#\/(settings|agents|account|schedules)$/.test(location.hash)) history.replaceState(null, "", S.active ? `#/c/${encodeURIComponent(S.active)}` : "#/");
  };
  return close;
}

export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label", text: label }), input,
    hint ? h("small", { class: "muted", text: hint }) : null);
}

export function busy(btn, fn) {
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

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// ------------------------------------------------------------------ theme

export function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  try { localStorage.setItem("xj.theme", theme); } catch (e) { /* ignore */ }
  syncCodeTheme();
}

export function syncCodeTheme() {
  const th = document.documentElement.dataset.theme;
  const dark = th === "dark" || (th === "auto" && window.matchMedia("(prefers-color-scheme: dark)").matches);
  $("#hl-dark").disabled = !dark;
  $("#hl-light").disabled = dark;
}

export function cycleTheme() {
  const order = ["auto", "light", "dark"];
  const cur = document.documentElement.dataset.theme || "auto";
  const next = order[(order.indexOf(cur) + 1) % order.length];
  applyTheme(next);
  toast(t(`theme.${next}`));
}
