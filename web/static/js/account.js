// The account dialog (everyone): language, theme, personal API keys.
import { del, get, post, put, upload } from "./api.js";
import { $, avatarEl, clear, fmtTime, h, toast } from "./dom.js";
import { lang, setLang, t } from "./i18n.js";
import { S, emit, errorText, personAvatar, report } from "./state.js";
import { applyTheme, busy, field, modal } from "./ui.js";

export async function openAccount() {
  const body = h("div", { class: "account" });
  const langSel = h("select", { id: "account-lang" }, ["zh", "en"].map((l) => h("option", { value: l, text: t(`lang.${l}`), selected: lang() === l })));
  langSel.addEventListener("change", () => { setLang(langSel.value); location.reload(); });
  const theme = h("select", { id: "account-theme" }, ["auto", "light", "dark"].map((x) => h("option", { value: x, text: t(`theme.${x}`),
    selected: (document.documentElement.dataset.theme || "auto") === x })));
  theme.addEventListener("change", () => applyTheme(theme.value));
  body.append(profileForm(),
    h("div", { class: "grid2" }, field(t("settings.language"), langSel), field(t("settings.theme"), theme)),
    notifyRow(), passwordForm());
  // personal API keys
  const keys = h("div", { class: "keys" });
  const loadKeys = async () => {
    clear(keys);
    try {
      const r = await get("/api/keys");
      for (const k of r.keys || []) {
        keys.appendChild(h("div", { class: "key-row", dataset: { id: k.id } },
          h("span", { class: "mono", text: `${k.prefix || ""}…` }), h("span", { text: k.name || "" }),
          h("span", { class: "muted", text: fmtTime(k.createdAt) }),
          k.revokedAt ? h("span", { class: "muted", text: t("settings.revoked") }) :
            h("button", { type: "button", class: "link-btn danger-text", text: t("settings.revoke"), onclick: async () => {
              try { await del(`/api/keys/${encodeURIComponent(k.id)}`); await loadKeys(); } catch (e) { report(e); }
            } })));
      }
      if (!(r.keys || []).length) keys.appendChild(h("p", { class: "muted", text: t("settings.noKeys") }));
    } catch (e) {
      keys.appendChild(h("p", { class: "error", text: errorText(e) }));
    }
  };
  const kname = h("input", { id: "key-name", placeholder: t("settings.keyName") });
  const kadd = h("button", { type: "button", class: "primary", id: "key-create", text: t("settings.createKey") });
  const once = h("div", { class: "once", id: "key-once", hidden: true });
  kadd.addEventListener("click", busy(kadd, async () => {
    const r = await post("/api/keys", { name: kname.value.trim() || "key" });
    // POST /api/keys answers {"key": {id, name, prefix, ...}, "secret": "xj_..."}: the secret is shown once
    const secret = r.secret || (typeof r.key === "string" ? r.key : "") || r.token || "";
    clear(once).append(h("p", { text: t("settings.keyOnce") }), h("input", { readonly: true, class: "mono", id: "key-secret", value: secret, onclick: (ev) => ev.target.select() }));
    once.hidden = false;
    kname.value = "";
    await loadKeys();
  }));
  body.append(h("h4", { text: t("settings.apiKeys") }), h("div", { class: "row" }, kname, kadd), once, keys);
  modal(t("nav.account"), body, { id: "account" });
  await loadKeys();
}

// Display name and avatar: initials by default, a short text (emoji) or an uploaded image.
function profileForm() {
  const preview = h("span", { class: "avatar-preview" }, avatarEl(personAvatar(S.me), "avatar large"));
  const name = h("input", { id: "profile-name", value: S.me.displayName || S.me.username, maxlength: "64", required: true });
  const avatar = h("input", { id: "profile-avatar", value: S.me.avatar && !S.me.avatar.startsWith("/") ? S.me.avatar : "",
    maxlength: "8", placeholder: t("account.avatarHint") });
  let image = S.me.avatar && S.me.avatar.startsWith("/") ? S.me.avatar : "";
  const file = h("input", { type: "file", id: "profile-image", accept: "image/png,image/jpeg,image/gif,image/webp" });
  const showPreview = () => clear(preview).appendChild(avatarEl(image || avatar.value.trim() || personAvatar({ displayName: name.value }), "avatar large"));
  avatar.addEventListener("input", () => { image = ""; showPreview(); });
  name.addEventListener("input", showPreview);
  file.addEventListener("change", async () => {
    if (!file.files.length) return;
    try {
      image = (await upload("/api/upload", { file: file.files[0] })).url;
      avatar.value = "";
      showPreview();
    } catch (e) { report(e); }
  });
  const clearImg = h("button", { type: "button", class: "link-btn", id: "profile-avatar-clear", text: t("account.initials"),
    onclick: () => { image = ""; avatar.value = ""; showPreview(); } });
  const save = h("button", { type: "submit", class: "primary", id: "profile-save", text: t("common.save") });
  const form = h("form", { class: "form profile", id: "profile-form" },
    h("div", { class: "row" }, preview, h("span", { class: "pill", text: t(`role.${S.me.role}`) }), h("span", { class: "muted", text: `@${S.me.username}` })),
    h("div", { class: "grid2" }, field(t("account.displayName"), name), field(t("account.avatar"), avatar)),
    h("div", { class: "row" }, h("label", { class: "upload-label button" }, h("span", { text: t("account.uploadImage") }), file), clearImg),
    save);
  form.addEventListener("submit", busy(save, async () => {
    const r = await put("/api/me", { displayName: name.value.trim(), avatar: image || avatar.value.trim() });
    Object.assign(S.me, r.user);
    S.people.set(S.me.id, { ...S.people.get(S.me.id), ...r.user });
    $("#me-name").textContent = S.me.displayName;
    toast(t("common.saved"));
    emit("people:changed");
  }));
  return form;
}

function passwordForm() {
  const current = h("input", { type: "password", id: "password-current", autocomplete: "current-password", required: true });
  const next = h("input", { type: "password", id: "password-new", autocomplete: "new-password", minlength: "8", required: true });
  const save = h("button", { type: "submit", id: "password-save", text: t("account.changePassword") });
  const form = h("form", { class: "form", id: "password-form" }, h("h4", { text: t("account.password") }),
    h("div", { class: "grid2" }, field(t("account.currentPassword"), current), field(t("account.newPassword"), next)), save);
  form.addEventListener("submit", busy(save, async () => {
    await post("/api/me/password", { currentPassword: current.value, newPassword: next.value });
    current.value = "";
    next.value = "";
    toast(t("account.passwordChanged"));
  }));
  return form;
}

// Browser notifications for mentions are opt-in: the browser asks once, on this click.
function notifyRow() {
  if (!("Notification" in window)) return null;
  const state = h("span", { class: "muted small", id: "notify-state", text: t(`account.notify.${Notification.permission}`) });
  const ask = h("button", { type: "button", id: "notify-enable", text: t("account.notifyEnable"),
    hidden: Notification.permission !== "default", onclick: async () => {
      const answer = await Notification.requestPermission();
      state.textContent = t(`account.notify.${answer}`);
      ask.hidden = answer !== "default";
    } });
  return h("div", { class: "row notify-row" }, ask, state);
}
