// Settings (admins): providers and the default model, users, invites.
import { ApiError, del, get, post, put } from "./api.js";
import { avatarEl, clear, fmtTime, h, roleAtLeast, toast } from "./dom.js";
import { t } from "./i18n.js";
import { S, errorText, personAvatar, report } from "./state.js";
import { mcpPane } from "./mcp.js";
import { systemPane } from "./system.js";
import { busy, field, modal } from "./ui.js";

export async function openSettings() {
  if (!roleAtLeast(S.me.role, "admin")) {
    modal(t("nav.settings"), h("p", { class: "error", id: "forbidden", text: t("error.forbidden") }));
    return;
  }
  const tabs = [["providers", t("settings.providers")], ["users", t("settings.users")], ["invites", t("settings.invites")],
    ["mcp", t("mcp.tab")]];
  if (S.me.role === "owner") tabs.push(["system", t("system.tab")]);
  const body = h("div", { class: "settings" });
  const nav = h("nav", { class: "tabs" });
  const pane = h("div", { class: "tab-pane" });
  const show = async (key) => {
    nav.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === key));
    clear(pane).appendChild(h("p", { class: "muted", text: t("common.loading") }));
    try {
      const el = await { providers: providersPane, users: usersPane, invites: invitesPane, mcp: mcpPane, system: systemPane }[key]();
      clear(pane).appendChild(el);
    } catch (e) {
      clear(pane).appendChild(h("p", { class: "error", text: errorText(e) }));
    }
  };
  for (const [key, label] of tabs) nav.appendChild(h("button", { type: "button", class: "tab", dataset: { tab: key }, text: label, onclick: () => show(key) }));
  body.append(nav, pane);
  modal(t("nav.settings"), body, { wide: true, id: "settings" });
  await show("providers");
}

async function providersPane() {
  const s = await get("/api/settings");
  const providers = (s.providers || []).map((p) => ({ ...p }));
  const wrap = h("div", { class: "providers" });
  let healthOf = {};
  try {
    const r = await get("/api/providers");
    for (const p of r.providers || []) healthOf[p.id || p.name] = p;
  } catch (e) { healthOf = {}; }
  // each model once, under its provider ("provider/model" is what is stored)
  const byProvider = new Map();
  for (const m of new Set((s.models || []).map((x) => (typeof x === "string" ? x : x.id || x.name)))) {
    const [pid, ...rest] = m.split("/");
    (byProvider.get(pid) || byProvider.set(pid, []).get(pid)).push([m, rest.join("/") || m]);
  }
  const def = h("select", { id: "default-model" }, h("option", { value: "", text: t("settings.autoModel") }),
    [...byProvider].map(([pid, items]) => h("optgroup", { label: pid },
      items.map(([value, name]) => h("option", { value, text: `${name} — ${pid}`, selected: s.defaultModel === value })))));
  const saveDef = h("button", { type: "button", id: "default-model-save", text: t("common.save") });
  saveDef.addEventListener("click", busy(saveDef, async () => {
    await put("/api/settings", { defaultModel: def.value || null });
    toast(t("common.saved"));
  }));
  wrap.appendChild(h("section", {}, h("h4", { text: t("settings.defaultModel") }), h("div", { class: "row" }, def, saveDef)));
  const listEl = h("div", { class: "provider-list" });
  for (const p of providers) {
    const pid = p.id || p.name;
    const hh = healthOf[pid] || {};
    // GET /api/providers answers {health: {state, ...}}; a plain string is accepted too
    const health = typeof hh.health === "object" && hh.health ? hh.health.state : hh.state || hh.health || "";
    const test = h("button", { type: "button", class: "act-test", text: t("settings.test") });
    const result = h("span", { class: "test-result" });
    test.addEventListener("click", busy(test, async () => {
      result.textContent = "…";
      try {
        const r = await post(`/api/providers/${encodeURIComponent(pid)}/test`, {});
        result.textContent = r.ok === false ? `✗ ${r.error || ""}` : `✓ ${t("settings.testOk")}${r.latencyMs ? ` (${Math.round(r.latencyMs)} ms)` : ""}`;
        result.className = `test-result ${r.ok === false ? "error" : "ok"}`;
      } catch (e) {
        if (e instanceof ApiError && (e.status === 404 || e.status === 405)) {
          // no test route on this server: show the gateway's health for this provider
          const r = await get("/api/providers");
          const mine = (r.providers || []).find((x) => (x.id || x.name) === pid) || {};
          result.textContent = `${t("settings.health")}: ${mine.state || mine.breaker || "?"}`;
          result.className = "test-result";
          return;
        }
        result.textContent = `✗ ${errorText(e)}`;
        result.className = "test-result error";
      }
    }));
    const fetchModels = h("button", { type: "button", class: "link-btn act-models", text: t("settings.fetchModels"),
      hidden: p.kind === "demo" });
    fetchModels.addEventListener("click", busy(fetchModels, async () => {
      try {
        const r = await get(`/api/providers/${encodeURIComponent(pid)}/models`);
        result.textContent = `${t("settings.modelsFound", { n: r.models.length })}: ${r.models.join(", ")}`;
        result.className = "test-result ok";
        if (!(p.readOnly || p.source === "env")) startEdit(p, r.models);
      } catch (e) {
        result.textContent = `✗ ${errorText(e)}`;
        result.className = "test-result error";
      }
    }));
    const edit = p.readOnly || p.source === "env" ? null : h("button", { type: "button", class: "link-btn act-edit",
      text: t("message.edit"), onclick: () => startEdit(p) });
    const remove = p.readOnly || p.source === "env" ? null : h("button", { type: "button", class: "link-btn danger-text", text: t("message.delete"),
      onclick: async () => {
        if (!window.confirm(t("settings.confirmDeleteProvider"))) return;
        try {
          await put("/api/settings", { providers: providers.filter((x) => x !== p && !(x.readOnly || x.source === "env")) });
          clear(wrap.parentNode || wrap).appendChild(await providersPane());
        } catch (e) { report(e); }
      } });
    listEl.appendChild(h("div", { class: "provider", dataset: { name: pid } },
      h("div", { class: "grow" },
        h("div", {}, h("strong", { text: pid }), " ", h("span", { class: "pill", text: p.kind || p.type || "" }),
          health ? h("span", { class: `pill health ${health}`, text: t(`settings.health.${health}`) }) : null),
        h("div", { class: "muted small", text: p.baseUrl || p.base_url || "" }),
        h("div", { class: "muted small key-masked", text: `${t("settings.key")}: ${p.apiKey || p.key || "—"}` }),
        h("div", { class: "small", text: (p.models || []).map((m) => (typeof m === "string" ? m : m.id)).join(", ") })),
      h("div", { class: "col" }, test, fetchModels, result, edit, remove)));
  }
  if (!providers.length) listEl.appendChild(h("p", { class: "muted", text: t("settings.noProviders") }));
  wrap.appendChild(h("section", {}, h("h4", { text: t("settings.providers") }), listEl));
  // add a provider
  const pname = h("input", { id: "provider-name", required: true, placeholder: "deepseek" });
  const kinds = (s.providerKinds || []).filter((k) => k.name !== "demo");
  const kind = h("select", { id: "provider-kind" }, (kinds.length ? kinds : [{ name: "openai" }, { name: "anthropic" }])
    .map((k) => h("option", { value: k.name, text: k.description ? `${k.name} — ${k.description}` : k.name })));
  const base = h("input", { id: "provider-base", placeholder: "https://api.deepseek.com/v1" });
  const key = h("input", { id: "provider-key", type: "password", autocomplete: "off" });
  const pmodels = h("input", { id: "provider-models", placeholder: "deepseek-chat, deepseek-reasoner" });
  const add = h("button", { type: "submit", class: "primary", id: "provider-add", text: t("settings.addProvider") });
  const form = h("form", { class: "form" }, h("div", { class: "grid2" }, field(t("settings.providerName"), pname), field(t("settings.kind"), kind)),
    field(t("settings.baseUrl"), base), field(t("settings.key"), key, t("settings.keyHint")),
    field(t("settings.models"), pmodels), add);
  // editing fills the same form; the key stays masked (the server keeps the stored one) unless retyped
  let editing = null;
  const formHead = h("h4", { text: t("settings.addProvider") });
  const startEdit = (p, models) => {
    editing = p;
    pname.value = p.id;
    pname.readOnly = true;
    kind.value = p.kind;
    base.value = p.baseUrl || "";
    key.value = p.apiKey || "";
    pmodels.value = (models || p.models || []).join(", ");
    formHead.textContent = `${t("message.edit")}: ${p.id}`;
    add.textContent = t("common.save");
    pname.scrollIntoView({ block: "center" });
  };
  form.addEventListener("submit", busy(add, async () => {
    const np = { id: pname.value.trim(), kind: kind.value, baseUrl: base.value.trim(), apiKey: key.value,
      models: pmodels.value.split(/[,，\s]+/).map((x) => x.trim()).filter(Boolean) };
    const keep = providers.filter((x) => !(x.readOnly || x.source === "env") && x !== editing);
    const at = editing ? providers.filter((x) => !(x.readOnly || x.source === "env")).indexOf(editing) : -1;
    if (at >= 0) keep.splice(at, 0, np);
    else keep.push(np);
    await put("/api/settings", { providers: keep });
    toast(t("common.saved"));
    const fresh = await providersPane();
    wrap.replaceWith(fresh);
  }));
  wrap.appendChild(h("section", {}, formHead, form));
  return wrap;
}

async function usersPane() {
  const r = await get("/api/users");
  const wrap = h("div", { class: "users" });
  const table = h("table", { class: "table" }, h("thead", {}, h("tr", {},
    h("th", { text: t("settings.person") }), h("th", { text: t("settings.role") }), h("th", { text: "" }))));
  const tbody = h("tbody");
  const reload = async () => wrap.replaceWith(await usersPane());
  for (const u of r.users || []) {
    const mine = u.id === S.me.id;
    const manageable = !mine && u.role !== "owner" && (S.me.role === "owner" || roleAtLeast("admin", u.role) && u.role !== "admin");
    const role = h("select", { class: "user-role", disabled: !manageable },
      ["owner", "admin", "member", "guest"].filter((x) => x !== "owner" || u.role === "owner")
        .map((x) => h("option", { value: x, text: t(`role.${x}`), selected: u.role === x })));
    role.addEventListener("change", async () => {
      try { await put(`/api/users/${encodeURIComponent(u.id)}`, { role: role.value }); toast(t("common.saved")); } catch (e) { report(e); }
    });
    const actions = manageable ? h("div", { class: "row user-actions" },
      h("button", { type: "button", class: "link-btn act-reset", text: t("settings.resetPassword"), onclick: (ev) => {
        const row = ev.target.closest("tr");
        if (row.querySelector(".reset-form")) return;
        const pw = h("input", { type: "password", class: "reset-password", minlength: "8", autocomplete: "new-password",
          placeholder: t("settings.newPasswordFor", { name: u.displayName || u.username }) });
        const save = h("button", { type: "submit", class: "primary", text: t("common.save") });
        const form = h("form", { class: "row reset-form" }, pw, save);
        form.addEventListener("submit", busy(save, async () => {
          await put(`/api/users/${encodeURIComponent(u.id)}`, { password: pw.value });
          form.remove();
          toast(t("settings.passwordReset"));
        }));
        row.lastChild.appendChild(form);
        pw.focus();
      } }),
      h("button", { type: "button", class: `link-btn ${u.disabled ? "act-reactivate" : "act-deactivate danger-text"}`,
        text: t(u.disabled ? "settings.reactivate" : "settings.deactivate"), onclick: async () => {
          if (!u.disabled && !window.confirm(t("settings.confirmDeactivate", { name: u.displayName || u.username }))) return;
          try { await put(`/api/users/${encodeURIComponent(u.id)}`, { disabled: !u.disabled }); await reload(); } catch (e) { report(e); }
        } }),
      h("button", { type: "button", class: "link-btn danger-text act-delete", text: t("message.delete"), onclick: async () => {
        if (!window.confirm(t("settings.confirmDeleteUser"))) return;
        try { await del(`/api/users/${encodeURIComponent(u.id)}`); await reload(); } catch (e) { report(e); }
      } })) : null;
    tbody.appendChild(h("tr", { dataset: { userId: u.id, username: u.username }, class: u.disabled ? "disabled" : "" },
      h("td", {}, h("div", { class: "row" }, avatarEl(personAvatar(u), "avatar small"),
        h("span", { class: "name", text: u.displayName || u.username }), h("span", { class: "muted small", text: `@${u.username}` }),
        u.disabled ? h("span", { class: "pill deactivated", text: t("settings.deactivated") }) : null)),
      h("td", {}, role), h("td", {}, actions)));
  }
  table.appendChild(tbody);
  const uname = h("input", { id: "user-name", required: true });
  const dname = h("input", { id: "user-display-name", maxlength: "64" });
  const pw = h("input", { id: "user-password", type: "password", minlength: "8", required: true, autocomplete: "new-password" });
  const role = h("select", { id: "user-role" }, ["member", "guest", "admin"].map((x) => h("option", { value: x, text: t(`role.${x}`) })));
  const add = h("button", { type: "submit", class: "primary", text: t("settings.addUser") });
  const form = h("form", { class: "form" }, h("div", { class: "grid2" }, field(t("login.username"), uname),
    field(t("account.displayName"), dname), field(t("login.password"), pw), field(t("settings.role"), role)), add);
  form.addEventListener("submit", busy(add, async () => {
    await post("/api/users", { username: uname.value.trim(), displayName: dname.value.trim(), password: pw.value, role: role.value });
    await reload();
  }));
  wrap.append(table, h("h4", { text: t("settings.addUser") }), form);
  return wrap;
}

async function copyText(text, btn) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    // no clipboard permission (plain http): select the text so the user can copy it
    const input = btn.parentNode.querySelector("input");
    if (input) input.select();
    document.execCommand("copy");
  }
  btn.textContent = t("settings.copied");
}

async function invitesPane() {
  const r = await get("/api/invites");
  const groups = [...S.channels.values()].filter((c) => c.type === "group");
  const wrap = h("div", { class: "invites" });
  const role = h("select", { id: "invite-role" }, ["member", "guest", "admin"].map((x) => h("option", { value: x, text: t(`role.${x}`) })));
  const hours = h("select", { id: "invite-hours" }, [[1, "settings.hour1"], [24, "settings.day1"], [72, "settings.days3"], [168, "settings.days7"], [720, "settings.days30"]]
    .map(([v, k]) => h("option", { value: String(v), text: t(k), selected: v === 72 })));
  const uses = h("input", { id: "invite-uses", type: "number", min: "1", max: "1000", value: "1" });
  const chanBox = h("div", { class: "checks", id: "invite-channels" }, groups.map((c) => h("label", { class: "check" },
    h("input", { type: "checkbox", value: c.id }), h("span", { text: c.name }))));
  if (!groups.length) chanBox.appendChild(h("p", { class: "muted small", text: t("settings.noGroups") }));
  const create = h("button", { type: "button", class: "primary", id: "invite-create", text: t("settings.createInvite") });
  const shown = h("div", { class: "once", id: "invite-link", hidden: true });
  create.addEventListener("click", busy(create, async () => {
    const channelIds = [...chanBox.querySelectorAll("input:checked")].map((b) => b.value);
    const res = await post("/api/invites", { role: role.value, hours: Number(hours.value), maxUses: Number(uses.value) || 1, channelIds });
    const link = res.url || res.link || (res.token ? `/invite/${res.token}` : "");
    const full = link.startsWith("/") ? location.origin + link : link;
    const copy = h("button", { type: "button", id: "invite-copy", text: t("settings.copy") });
    copy.addEventListener("click", () => copyText(full, copy));
    clear(shown).append(h("p", { text: t("settings.inviteOnce") }),
      h("div", { class: "row" }, h("input", { readonly: true, value: full, class: "mono", id: "invite-url", onclick: (ev) => ev.target.select() }), copy));
    shown.hidden = false;
    clear(listEl);
    for (const inv of (await get("/api/invites")).invites || []) listEl.appendChild(inviteRow(inv));
  }));
  const listEl = h("ul", { class: "plain invite-list", id: "invite-list" });
  const inviteRow = (inv) => h("li", { class: "invite-row", dataset: { id: inv.id, active: inv.active ? "1" : "0" } },
    h("span", { class: "pill", text: t(`role.${inv.role}`) }),
    h("span", { text: ` ${t("settings.inviteUses", { uses: inv.uses ?? 0, max: inv.maxUses ?? 1 })} · ${t("settings.expires", { when: fmtTime(inv.expiresAt) })}` }),
    (inv.channelIds || []).length ? h("span", { class: "muted small", text: ` · ${(inv.channelIds || []).map((id) => (S.channels.get(id) || {}).name || id).join(", ")}` }) : null,
    inv.active ? null : h("span", { class: "muted", text: ` ${t("settings.inviteInactive")}` }),
    h("button", { type: "button", class: "link-btn danger-text act-revoke", text: t("settings.revoke"), onclick: async () => {
      try { await del(`/api/invites/${encodeURIComponent(inv.id)}`); wrap.replaceWith(await invitesPane()); } catch (e) { report(e); }
    } }));
  for (const inv of r.invites || []) listEl.appendChild(inviteRow(inv));
  wrap.append(h("div", { class: "grid3" }, field(t("settings.role"), role), field(t("settings.inviteExpiry"), hours),
    field(t("settings.inviteMaxUses"), uses)), field(t("settings.inviteChannels"), chanBox), h("div", { class: "row" }, create), shown,
  h("h4", { text: t("settings.openInvites") }), listEl);
  return wrap;
}
