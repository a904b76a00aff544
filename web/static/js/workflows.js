// Workflows of a group: the list with a start box, the editor of a workflow's steps, and the
// runs (progress, approve / reject, suspend / resume / cancel), kept live by workflow_run frames.
import { del, get, post, put } from "./api.js";
import { $, clear, fmtTime, h, roleAtLeast } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, on, report, userName } from "./state.js";
import { workflowTag } from "./messages.js";
import { busy, closePanel, currentPanel, field, modal, openPanel } from "./ui.js";

const runs = new Map(); // run id -> the run as the server last told it
const tokens = new Map(); // workflow id -> its webhook token, known only right after it was made
let workflows = [];
let loadedFor = null; // the channel whose workflows `workflows` holds
const ACTIVE = ["running", "paused", "suspended", "interrupted"];
const enc = encodeURIComponent;

// How far a run has come: a reply to a request may arrive after the frames of what followed it.
function progress(run) {
  const settled = run.steps.filter((s) => !["pending", "waiting", "running"].includes(s.status)).length;
  return `${run.updatedAt || ""}|${String(settled).padStart(3, "0")}|${ACTIVE.includes(run.status) ? 0 : 1}`;
}

function remember(run) {
  const prev = runs.get(run.id);
  if (!prev || progress(run) >= progress(prev)) runs.set(run.id, run);
}

async function load(channelId) {
  const r = await get(`/api/channels/${enc(channelId)}/workflows`);
  workflows = r.workflows || [];
  loadedFor = channelId;
  for (const w of workflows) if (w.lastRun) remember(w.lastRun);
  for (const run of r.activeRuns || []) remember(run);
}

// The workflows of a group as last loaded (the composer offers them after "/"), and a fresh look.
export function channelWorkflows(channelId) {
  return loadedFor === channelId ? workflows : [];
}

export async function refreshWorkflows(channelId) {
  await load(channelId);
  return channelWorkflows(channelId);
}

// Start a run with this input (from the panel or the composer): the input is posted in the group and
// the steps answer there; the run's card follows its workflow_run frames.
export async function startWorkflow(w, text) {
  const r = await post(`/api/workflows/${enc(w.id)}/runs`, { input: text });
  remember(r.run);
  if (currentPanel() === "workflows" && r.run.channelId === S.active) render();
  return r.run;
}

export async function openWorkflows() {
  if (!S.active) return;
  try {
    await load(S.active);
  } catch (e) {
    report(e);
    return;
  }
  render();
}

function mayDecide(run) {
  return run.startedBy === S.me.id || roleAtLeast(S.me.role, "admin");
}

export function stepsLine(w) {
  return w.steps.map((s) => `${agentName(s.agentId)}${s.approval ? ` (${t("wf.asksFirst")})` : ""}`).join(" → ");
}

function workflowCard(w) {
  const input = h("textarea", { class: "wf-input", rows: "2", placeholder: t("wf.inputHint"), maxlength: "32000" });
  const start = h("button", { type: "button", class: "primary wf-start", text: t("wf.start") });
  start.addEventListener("click", busy(start, async () => {
    const text = input.value.trim();
    if (!text) throw new Error(t("wf.inputRequired"));
    await startWorkflow(w, text);
    input.value = "";
    render();
  }));
  const token = tokens.get(w.id);
  return h("section", { class: "workflow", dataset: { workflowId: w.id } },
    h("div", { class: "chain-head" }, h("strong", { text: w.name }),
      h("button", { type: "button", class: "link-btn wf-edit", text: t("wf.edit"), onclick: () => editWorkflow(w) })),
    h("p", { class: "muted small wf-steps", text: stepsLine(w) }),
    token ? h("div", { class: "wf-token" }, h("small", { class: "muted", text: t("wf.tokenOnce") }),
      h("code", { text: `POST ${location.origin}${w.triggerUrl}?token=${token}` })) : null,
    input, h("div", { class: "row" }, start));
}

function runCard(run) {
  const steps = h("ol", { class: "collab-steps wf-run-steps" });
  for (const s of run.steps) {
    const decided = s.decision ? t(`wf.${s.decision.decision}By`, { name: s.decision.byName || userName(s.decision.by) }) : "";
    steps.appendChild(h("li", { class: `step ${s.status}`, dataset: { state: s.status } },
      h("span", { class: "step-agent", text: agentName(s.agentId) }),
      h("span", { class: "step-state", text: t(`wf.step.${s.status}`) + (s.attempts > 1 ? ` ×${s.attempts}` : "") }),
      decided ? h("span", { class: "step-state", text: decided }) : null,
      s.error && s.status !== "pending" ? h("small", { class: "muted wf-error", text: ` ${s.error}` }) : null));
  }
  const card = h("section", { class: `chain wf-run ${run.status}`, dataset: { runId: run.id, status: run.status } },
    h("div", { class: "chain-head" },
      h("strong", { text: run.workflowName || t("wf.title") }),
      h("span", { class: `pill ${run.status}`, text: t(`wf.status.${run.status}`) })),
    h("p", { class: "muted run-meta", text: t("wf.runMeta", { when: fmtTime(run.createdAt), who: userName(run.startedBy),
      step: Math.min(run.step + 1, run.totalSteps), total: run.totalSteps }) }),
    steps,
    run.error ? h("p", { class: "muted small", text: run.error }) : null);
  if (!mayDecide(run)) {
    if (run.status === "paused") card.appendChild(h("p", { class: "muted small", text: t("wf.waitingFor", { name: userName(run.startedBy) }) }));
    return card;
  }
  const act = (cls, label, what, kind = "") => {
    const b = h("button", { type: "button", class: `${kind} ${cls}`.trim(), text: t(label) });
    b.addEventListener("click", busy(b, async () => {
      const r = await post(`/api/workflow-runs/${enc(run.id)}/${what}`);
      remember(r.run);
      render();
    }));
    return b;
  };
  const row = h("div", { class: "row" });
  if (run.status === "paused") {
    const waiting = run.steps[run.step];
    card.appendChild(h("p", { class: "small wf-ask", text: t("wf.ask", { agent: agentName(waiting.agentId) }) }));
    row.append(act("wf-approve", "wf.approve", "approve", "primary"), act("wf-reject", "wf.reject", "reject", "danger"));
  }
  if (run.status === "running" || run.status === "paused") row.append(act("wf-suspend", "wf.suspend", "suspend"));
  if (run.status === "suspended" || run.status === "interrupted") row.append(act("wf-resume", "wf.resume", "resume", "primary"));
  if (ACTIVE.includes(run.status)) row.append(act("wf-cancel", "wf.cancel", "cancel", "danger"));
  if (row.childNodes.length) card.appendChild(row);
  return card;
}

function render() {
  const c = S.channels.get(S.active);
  const body = h("div", { class: "collab workflows", id: "workflows" });
  const add = h("button", { type: "button", class: "wf-new", text: t("wf.new"), onclick: () => editWorkflow(null) });
  body.appendChild(h("div", { class: "row" }, add));
  if (!workflows.length) body.appendChild(h("p", { class: "muted", text: t("wf.none") }));
  for (const w of workflows) body.appendChild(workflowCard(w));
  const mine = [...runs.values()].filter((r) => c && r.channelId === c.id)
    .sort((a, b) => String(b.createdAt).localeCompare(String(a.createdAt))).slice(0, 10);
  if (mine.length) body.appendChild(h("h4", { class: "list-head", text: t("wf.runs") }));
  for (const run of mine) body.appendChild(runCard(run));
  openPanel("workflows", t("wf.title"), body);
}

// ------------------------------------------------------------------ the editor

export function editWorkflow(w) {
  const c = S.channels.get(S.active);
  if (!c) return;
  const steps = w ? w.steps.map((s) => ({ ...s })) : [{ agentId: (c.agentIds || [])[0] || "", instruction: "{{input}}" }];
  const name = h("input", { id: "wf-name", value: w ? w.name : "", maxlength: "100", required: true });
  const list = h("ol", { class: "wf-edit-steps", id: "wf-steps" });
  const stopKind = h("select", { id: "wf-stop-kind" },
    ...["", "contains", "notContains"].map((k) => h("option", { value: k, text: t(`wf.stop.${k || "none"}`),
      selected: !!(w && w.stopWhen && k in w.stopWhen) || (!k && !(w && w.stopWhen)) })));
  const stopText = h("input", { id: "wf-stop-text", value: w && w.stopWhen ? Object.values(w.stopWhen)[0] : "" });
  const draw = () => {
    clear(list);
    steps.forEach((s, i) => {
      const agent = h("select", { class: "wf-agent", onchange: (e) => { s.agentId = e.target.value; } },
        ...(c.agentIds || []).map((id) => h("option", { value: id, text: agentName(id), selected: id === s.agentId })));
      const text = h("textarea", { class: "wf-instruction", rows: "2", value: s.instruction || "",
        oninput: (e) => { s.instruction = e.target.value; } });
      const approval = h("input", { type: "checkbox", class: "wf-approval", checked: !!s.approval,
        onchange: (e) => { s.approval = e.target.checked; } });
      const onError = h("select", { class: "wf-on-error", onchange: (e) => { s.onError = e.target.value; } },
        ...["stop", "skip", "retry"].map((k) => h("option", { value: k, text: t(`wf.onError.${k}`), selected: (s.onError || "stop") === k })));
      const retries = h("input", { type: "number", class: "wf-retries", min: "0", max: "5", value: String(s.retries || 0),
        oninput: (e) => { s.retries = Number(e.target.value) || 0; } });
      list.appendChild(h("li", { class: "wf-edit-step" },
        h("div", { class: "row" }, agent,
          h("button", { type: "button", class: "link-btn", text: "↑", disabled: i === 0,
            onclick: () => { [steps[i - 1], steps[i]] = [steps[i], steps[i - 1]]; draw(); } }),
          h("button", { type: "button", class: "link-btn", text: "✕", disabled: steps.length === 1,
            onclick: () => { steps.splice(i, 1); draw(); } })),
        text,
        h("div", { class: "row wf-step-opts" },
          h("label", { class: "check" }, approval, h("span", { text: t("wf.approval") })),
          h("label", { class: "check" }, h("span", { text: t("wf.onError") }), onError),
          h("label", { class: "check" }, h("span", { text: t("wf.retries") }), retries))));
    });
  };
  draw();
  const addStep = h("button", { type: "button", class: "wf-add-step", text: t("wf.addStep"), onclick: () => {
    steps.push({ agentId: (c.agentIds || [])[0] || "", instruction: "{{previous}}" });
    draw();
  } });
  const save = h("button", { type: "submit", class: "primary", id: "wf-save", text: t("common.save") });
  const remove = w ? h("button", { type: "button", class: "danger", text: t("wf.delete") }) : null;
  const form = h("form", { class: "form" },
    field(t("wf.name"), name),
    field(t("wf.steps"), h("div", {}, list, addStep), t("wf.templateHint")),
    field(t("wf.stopWhen"), h("div", { class: "row" }, stopKind, stopText)),
    h("div", { class: "row" }, save, remove));
  const close = modal(w ? t("wf.editTitle") : t("wf.new"), form, { id: "workflow", wide: true });
  form.addEventListener("submit", busy(save, async () => {
    const body = { name: name.value.trim(), steps: steps.map((s) => ({ agentId: s.agentId, instruction: s.instruction,
      approval: !!s.approval, onError: s.onError || "stop", ...(s.onError === "retry" ? { retries: s.retries || 1 } : {}) })),
    stopWhen: stopKind.value && stopText.value.trim() ? { [stopKind.value]: stopText.value.trim() } : null };
    if (!body.name) throw new Error(t("wf.nameRequired"));
    if (w) await put(`/api/workflows/${enc(w.id)}`, body);
    else {
      const r = await post(`/api/channels/${enc(c.id)}/workflows`, body);
      tokens.set(r.workflow.id, r.triggerToken);
    }
    close();
    await openWorkflows();
  }));
  if (remove) {
    remove.addEventListener("click", busy(remove, async () => {
      if (!window.confirm(t("wf.confirmDelete"))) return;
      await del(`/api/workflows/${enc(w.id)}`);
      close();
      await openWorkflows();
    }));
  }
}

// A step's reply streamed in without its metadata: once the run names it, it says which step it is.
function tagReplies(run) {
  for (const s of run.steps) {
    const el = s.replyId && document.querySelector(`#message-list .msg[data-id="${CSS.escape(s.replyId)}"] .msg-head`);
    if (el && !el.querySelector(".msg-workflow")) el.appendChild(workflowTag({ metadata: { workflow: { step: s.index + 1 } } }));
  }
}

on("workflow_run", (run) => {
  remember(run);
  if (run.channelId !== S.active) return;
  tagReplies(run);
  if (currentPanel() === "workflows" || run.status === "paused") render();
});
on("channel:opened", async (c) => {
  if (c.type !== "group") {
    if (currentPanel() === "workflows") closePanel();
    return;
  }
  try {
    await load(c.id);
  } catch (e) { return; }
  const waiting = [...runs.values()].some((r) => r.channelId === c.id && r.status === "paused");
  if (currentPanel() === "workflows" || waiting) render();
});
