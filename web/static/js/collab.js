// The collaboration panel: a chain's steps, and approving, editing or stopping it.
import { get, post } from "./api.js";
import { $, fmtTime, h, roleAtLeast } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, on, userName } from "./state.js";
import { busy, closePanel, currentPanel, field, openPanel } from "./ui.js";

function onCollab(d) {
  const prev = S.chains.get(d.chainId) || { steps: {} };
  const st = { ...prev, ...d };
  st.steps = { ...prev.steps, [d.step]: { agent: d.currentAgent, status: d.status } };
  S.chains.set(d.chainId, st);
  if (d.channelId === S.active) {
    $("#btn-collab").hidden = false;
    if (currentPanel() !== "collab") openCollab();
    else openCollab();
  }
}

// The runs stored on the server (they outlive reloads and restarts), merged with the live ones.
export async function loadRuns(channelId) {
  try {
    const r = await get(`/api/channels/${encodeURIComponent(channelId)}/chains`);
    for (const run of r.runs || []) {
      const prev = S.chains.get(run.chainId) || { steps: {} };
      const steps = { ...prev.steps };
      (run.outputs || []).forEach((o) => { steps[o.step] = { agent: o.agentId, status: "completed" }; });
      if (run.step && !steps[run.step]) steps[run.step] = { agent: run.currentAgent, status: run.status };
      S.chains.set(run.chainId, { ...prev, ...run, steps });
    }
  } catch (e) { /* the live frames still show */ }
}

export async function showRuns() {
  if (S.active) await loadRuns(S.active);
  openCollab();
}

export function openCollab() {
  const chains = [...S.chains.values()].filter((c) => c.channelId === S.active)
    .sort((a, b) => String(a.createdAt || "").localeCompare(String(b.createdAt || "")));
  const body = h("div", { class: "collab" });
  if (!chains.length) body.appendChild(h("p", { class: "muted", text: t("collab.none") }));
  for (const c of chains.reverse()) {
    const total = c.totalSteps || Object.keys(c.steps).length;
    const planned = ((S.channels.get(c.channelId) || {}).chain) || [];
    const steps = h("ol", { class: "collab-steps" });
    for (let i = 1; i <= total; i++) {
      const s = c.steps[i];
      let state = "waiting";
      if (s) state = s.status;
      if (i < c.step) state = "completed";
      if (i === c.step) state = c.status === "paused" ? "completed" : c.status;
      if (i === c.step + 1 && c.status === "paused") state = "paused"; // the next agent waits for approval
      const who = (i === c.step + 1 && c.nextAgent) || (s && s.agent) || planned[i - 1];
      steps.appendChild(h("li", { class: `step ${state}`, dataset: { state } },
        h("span", { class: "step-agent", text: who ? agentName(who) : `#${i}` }),
        h("span", { class: "step-state", text: t(`collab.${state}`) })));
    }
    const card = h("section", { class: `chain ${c.status}`, dataset: { chainId: c.chainId, status: c.status } },
      h("div", { class: "chain-head" },
        h("strong", { text: t("collab.step", { step: c.step, total }) }),
        h("span", { class: `pill ${c.status}`, text: t(`collab.${c.status}`) })),
      c.createdAt ? h("p", { class: "muted run-meta", text: t("collab.startedBy", {
        when: fmtTime(c.createdAt), who: c.startedByName || "" }) }) : null,
      steps,
      c.reason ? h("p", { class: "muted", text: c.reason }) : null);
    if (c.status === "paused" && !mayDecide(c)) {
      card.append(h("p", { class: "muted small waiting-for", text: t("collab.waitingFor", { name: userName(c.startedBy) }) }),
        h("pre", { class: "handoff-view", text: c.handoff || "" }));
    } else if (c.status === "paused") {
      const ta = h("textarea", { class: "handoff", rows: "5", value: c.handoff || "" });
      const approve = h("button", { type: "button", class: "primary act-approve", text: t("collab.approve") });
      const stop = h("button", { type: "button", class: "danger act-stop", text: t("collab.stop") });
      approve.addEventListener("click", busy(approve, () => chainAction(c, "approve", ta.value)));
      stop.addEventListener("click", busy(stop, () => chainAction(c, "stop")));
      card.append(field(t("collab.handoff"), ta), h("div", { class: "row" }, approve, stop));
    }
    body.appendChild(card);
  }
  openPanel("collab", t("collab.title"), body);
}

// Who may approve, edit or stop a chain: the person who started it, and admins or the owner.
function mayDecide(c) {
  return !c.startedBy || c.startedBy === S.me.id || roleAtLeast(S.me.role, "admin");
}

// approve as is, approve an edited hand-off ("edit"), or stop the chain.
async function chainAction(c, action, text) {
  if (action === "approve" && text !== undefined && text !== (c.handoff || "")) action = "edit";
  const body = { chainId: c.chainId, action, ...(action === "edit" ? { text } : {}) };
  const sent = S.socket.send("chain_decision", body);
  if (!sent) await post(`/api/chains/${encodeURIComponent(c.chainId)}/decision`, body);
}

on("collab_status", onCollab);
on("channel:opened", async (c) => {
  if (c.type !== "group") {
    if (currentPanel() === "collab") closePanel();
    return;
  }
  await loadRuns(c.id);
  const waiting = [...S.chains.values()].some((r) => r.channelId === c.id && r.status === "paused");
  if (currentPanel() === "collab" || waiting) openCollab();  // a run waiting for approval is shown again
});
