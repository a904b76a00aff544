// The account dialog (everyone): language, theme, personal API keys.
import { del, get, post } from "./api.js";
import { clear, fmtTime, h } from "./dom.js";
import { lang, setLang, t } from "./i18n.js";
import { S, errorText, report } from "./state.js";
import { applyTheme, busy, field, modal } from "./ui.js";

export async function openAccount() {
  const body = h("div", { class: "account" });
  const langSel = h("select", { id: "account-lang" }, ["zh", "en"].map((l) => h("option", { value: l, text: t(`lang.${l}`), selected: lang() === l })));
  langSel.addEventListener("change", () => { setLang(langSel.value); location.reload(); });
  const theme = h("select", { id: "account-theme" }, ["auto", "light", "dark"].map((x) => h("option", { value: x, text: t(`theme.${x}`),
    selected: (document.documentElement.dataset.theme || "auto") === x })));
  theme.addEventListener("change", () => applyTheme(theme.value));
  body.append(h("p", {}, h("strong", { text: S.me.displayName || S.me.username }), " ", h("span", { class: "pill", text: t(`role.${S.me.role}`) })),
    h("div", { class: "grid2" }, field(t("settings.language"), langSel), field(t("settings.theme"), theme)));
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
    clear(once).append(h("p", { text: t("settings.keyOnce") }), h("input", { readonly: true, class: "mono", value: r.key || r.token || "", onclick: (ev) => ev.target.select() }));
    once.hidden = false;
    kname.value = "";
    await loadKeys();
  }));
  body.append(h("h4", { text: t("settings.apiKeys") }), h("div", { class: "row" }, kname, kadd), once, keys);
  modal(t("nav.account"), body, { id: "account" });
  await loadKeys();
}
