// Schedules (members and up): what each agent runs on its own, when next, and how the last run went.
import { del, get, post, put } from "./api.js";
import { clear, fmtTime, h, toast } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, errorText } from "./state.js";
import { busy, field, modal } from "./ui.js";

function when(iso) {
  return iso ? `${fmtTime(iso)} (${new Date(iso).toLocaleString()})` : t("schedules.never");
}

function row(s, refresh) {
  const last = s.lastRun;
  const ch = S.channels.get(s.channelId);
  const status = last ? h("span", { class: `pill ${last.status}`, text: t(`schedules.status.${last.status}`) }) : null;
  const runNow = h("button", { type: "button", class: "act-run", text: t("schedules.runNow") });
  runNow.addEventListener("click", busy(runNow, async () => {
    await post(`/api/schedules/${encodeURIComponent(s.id)}/run`, {});
    toast(t("schedules.started"));
    setTimeout(refresh, 1500);
  }));
  const pause = h("button", { type: "button", class: "act-toggle", text: s.enabled ? t("schedules.pause") : t("schedules.resume") });
  pause.addEventListener("click", busy(pause, async () => {
    await put(`/api/schedules/${encodeURIComponent(s.id)}`, { enabled: !s.enabled });
    await refresh();
  }));
  const remove = h("button", { type: "button", class: "act-delete link-btn danger-text", text: t("message.delete") });
  remove.addEventListener("click", busy(remove, async () => {
    if (!window.confirm(t("schedules.confirmDelete"))) return;
    await del(`/api/schedules/${encodeURIComponent(s.id)}`);
    await refresh();
  }));
  return h("li", { class: "schedule", dataset: { id: s.id } },
    h("div", { class: "schedule-head" },
      h("strong", { text: agentName(s.agentId) }),
      h("span", { class: "muted", text: ` → ${ch ? ch.name : s.channelId}` }),
      h("code", { class: "schedule-when", text: s.cron ? `${s.cron} · ${s.timezone}` : `${t("schedules.once")} ${when(s.at)}` })),
    h("p", { class: "schedule-prompt", text: s.prompt }),
    h("div", { class: "schedule-meta" },
      h("span", { class: "next-run", text: `${t("schedules.next")}: ${s.enabled ? when(s.nextRunAt) : t("schedules.paused")}` }),
      h("span", { class: "last-run" }, `${t("schedules.last")}: `, last ? [status, " ", fmtTime(last.startedAt),
        last.error ? h("span", { class: "error", text: ` ${last.error}` }) : null] : t("schedules.never"))),
    h("div", { class: "row" }, runNow, pause, remove));
}

function form(refresh) {
  const groups = [...S.channels.values()].filter((c) => !c.archived);
  const channel = h("select", { id: "sched-channel" }, groups.map((c) => h("option", { value: c.id, text: c.name })));
  const agent = h("select", { id: "sched-agent" });
  const fillAgents = () => {
    const c = S.channels.get(channel.value);
    clear(agent).append(...((c && c.agentIds) || []).map((id) => h("option", { value: id, text: agentName(id) })));
  };
  channel.addEventListener("change", fillAgents);
  fillAgents();
  const prompt = h("textarea", { id: "sched-prompt", rows: 2, maxlength: 8000, placeholder: t("schedules.promptHint") });
  const kind = h("select", { id: "sched-kind" }, h("option", { value: "cron", text: t("schedules.repeat") }),
    h("option", { value: "at", text: t("schedules.once") }));
  const cron = h("input", { id: "sched-cron", value: "0 9 * * 1-5", placeholder: "0 9 * * 1-5" });
  const at = h("input", { id: "sched-at", type: "datetime-local", hidden: true });
  kind.addEventListener("change", () => { cron.hidden = kind.value !== "cron"; at.hidden = kind.value !== "at"; });
  const tz = h("input", { id: "sched-tz", value: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" });
  const error = h("p", { class: "error", id: "sched-error", hidden: true });
  const save = h("button", { type: "submit", id: "sched-save", text: t("schedules.create") });
  const el = h("form", { class: "schedule-form", id: "schedule-form" },
    field(t("schedules.channel"), channel), field(t("schedules.agent"), agent),
    field(t("schedules.prompt"), prompt), field(t("schedules.when"), h("div", { class: "row" }, kind, cron, at),
      t("schedules.cronHint")),
    field(t("schedules.timezone"), tz), error, save);
  el.addEventListener("submit", busy(save, async () => {
    error.hidden = true;
    const body = { channelId: channel.value, agentId: agent.value, prompt: prompt.value, timezone: tz.value.trim() };
    if (kind.value === "cron") body.cron = cron.value; else body.at = at.value;
    try {
      await post("/api/schedules", body);
    } catch (e) {
      error.textContent = errorText(e); // the draft stays as typed
      error.hidden = false;
      return;
    }
    prompt.value = "";
    toast(t("schedules.created"));
    await refresh();
  }));
  return el;
}

export async function openSchedules() {
  const body = h("div", { class: "schedules" });
  const list = h("ul", { class: "schedule-list", id: "schedule-list" });
  const refresh = async () => {
    const { schedules } = await get("/api/schedules");
    clear(list);
    if (!schedules.length) list.appendChild(h("li", { class: "muted", id: "no-schedules", text: t("schedules.none") }));
    for (const s of schedules) list.appendChild(row(s, refresh));
  };
  body.append(list, h("h4", { text: t("schedules.new") }), form(refresh));
  modal(t("schedules.title"), body, { wide: true, id: "schedules" });
  await refresh();
}
