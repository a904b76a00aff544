// Settings › System (owner): what the server is doing, and backups made and downloaded here.
import { get, post } from "./api.js";
import { h, toast } from "./dom.js";
import { t } from "./i18n.js";
import { busy } from "./ui.js";

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

function duration(seconds) {
  const s = Math.floor(seconds || 0);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : `${m}m ${s % 60}s`;
}

function facts(sys) {
  const rows = [
    [t("system.version"), `${sys.version} · Python ${sys.python}`],
    [t("system.uptime"), duration(sys.uptimeSeconds)],
    [t("system.database"), `${bytes(sys.databases.mainBytes)} · ${t("system.workspaces")}: ${sys.workspaces} (${bytes(sys.databases.workspaceBytes)}) · ${t("system.uploads")}: ${bytes(sys.databases.uploadsBytes)}`],
    [t("system.people"), `${sys.users} · ${t("system.agents")}: ${sys.agents}`],
    [t("system.connections"), String(sys.connections)],
    [t("system.running"), String(sys.runningTurns) + (sys.tasks ? ` · ${t("system.tasks")}: ${Object.entries(sys.tasks).map(([k, v]) => `${k} ${v}`).join(", ")}` : "")],
  ];
  return h("dl", { class: "facts", id: "system-facts" }, rows.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
}

function providers(sys) {
  return h("ul", { class: "provider-health", id: "system-providers" },
    sys.providers.map((p) => h("li", {}, h("span", { class: `dot state-${p.state}`, title: p.state }),
      h("span", { text: ` ${p.id} (${p.kind}) · ${t(`system.state.${p.state}`)} · ${t("system.calls").replace("{calls}", p.calls).replace("{failures}", p.failures)}` }))));
}

function backupList(listing) {
  if (!listing.backups.length) return h("p", { class: "muted", id: "backup-list", text: t("system.noBackups") });
  return h("ul", { id: "backup-list", class: "backup-list" }, listing.backups.map((b) => h("li", {},
    h("a", { href: `/api/backups/${encodeURIComponent(b.name)}`, download: b.name, text: b.name }),
    h("span", { class: "muted", text: ` · ${bytes(b.bytes)}` }))));
}

export async function systemPane() {
  const [sys, listing] = await Promise.all([get("/api/system"), get("/api/backups")]);
  const wrap = h("div", { class: "system" });
  let list = backupList(listing);
  const now = h("button", { type: "button", id: "backup-now", text: t("system.backupNow") });
  now.addEventListener("click", busy(now, async () => {
    const r = await post("/api/backups", {});
    toast(t("system.backupDone").replace("{name}", r.backup.name));
    const fresh = backupList(await get("/api/backups"));
    list.replaceWith(fresh);
    list = fresh;
  }));
  const every = listing.intervalHours > 0
    ? t("system.backupEvery").replace("{hours}", listing.intervalHours).replace("{keep}", listing.keep)
    : t("system.backupManual").replace("{keep}", listing.keep);
  wrap.append(
    h("section", {}, h("h4", { text: t("system.title") }), facts(sys)),
    h("section", {}, h("h4", { text: t("settings.providers") }), providers(sys)),
    h("section", {}, h("h4", { text: t("system.backups") }), h("p", { class: "muted", text: `${every} ${listing.folder}` }),
      h("div", { class: "row" }, now), list),
  );
  return wrap;
}
