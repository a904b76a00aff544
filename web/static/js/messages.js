// One message on screen: its element, tool cards, edit and delete.
import { del, post } from "./api.js";
import { $, avatarEl, fmtBytes, fmtTime, h } from "./dom.js";
import { t } from "./i18n.js";
import { linkCitations } from "./citations.js";
import { copyText, localUrl, renderInto } from "./render.js";
import { S, agentName, fileName, isOwn, person, personAvatar, report, userName } from "./state.js";
import { loadChannels } from "./sidebar.js";

export const list = () => $("#message-list");

// A stored tool call and its stored result are one card, as they were live.
export function mergeStoredResult(m, frag) {
  const meta = m.metadata || {};
  if (!meta.callId) return false;
  const sel = `.tool-card[data-call-id="${CSS.escape(meta.callId)}"]`;
  const card = frag.querySelector(sel) || list().querySelector(sel);
  if (!card) return false;
  const failed = meta.isError || meta.error || meta.status === "error";
  setToolResult(card, meta.result ?? m.content, failed ? "error" : "completed");
  return true;
}

export function toolCard(name, args, status) {
  const card = h("details", { class: "tool-card", dataset: { status, tool: name } },
    h("summary", {},
      h("span", { class: "tool-icon", text: "🔧" }),
      h("span", { class: "tool-name", text: name }),
      h("span", { class: "tool-status", text: t(`tool.${status}`) })),
    h("div", { class: "tool-section" }, h("div", { class: "tool-label", text: t("tool.arguments") }),
      h("pre", { class: "tool-args", text: typeof args === "string" ? args : JSON.stringify(args ?? {}, null, 2) })),
    h("div", { class: "tool-section tool-result-wrap", hidden: true },
      h("div", { class: "tool-label", text: t("tool.result") }), h("pre", { class: "tool-result" })));
  return card;
}

export function setToolStatus(card, status) {
  card.dataset.status = status;
  card.querySelector(".tool-status").textContent = t(`tool.${status}`);
}

const pretty = (v) => (typeof v === "string" ? v : JSON.stringify(v ?? {}, null, 2));

// A tool call waiting for a person: its arguments (editable JSON) and approve / edit / reject for who
// may decide (others see the buttons disabled and whom it waits for); once decided, who decided.
// ``decide(decision, args)`` sends the decision (it throws on a refusal).
export function approvalBox(card, a, { mayDecide, requester, decide }) {
  let box = card.querySelector(".approval");
  if (!box) {
    box = h("div", { class: "tool-section approval" });
    card.querySelector(".tool-result-wrap").before(box);
  }
  if (box.dataset.status === a.status && box.dataset.mayDecide === String(mayDecide)) return box;
  box.dataset.approvalId = a.id;
  box.dataset.status = a.status;
  box.dataset.mayDecide = String(mayDecide);
  while (box.firstChild) box.removeChild(box.firstChild);
  card.dataset.approvalId = a.id;
  const argsPre = card.querySelector(".tool-args");
  if (a.status !== "pending") {
    if (a.status === "edited" && argsPre) argsPre.textContent = pretty(a.editedArguments);
    if (argsPre) argsPre.closest(".tool-section").hidden = false;
    const who = a.decidedByName || (a.decidedBy ? requester(a.decidedBy) : t("approval.someone"));
    const key = a.status === "expired" ? (a.reason === "timeout" ? "approval.expired" : "approval.expiredStopped")
      : `approval.${a.status}`;
    box.appendChild(h("div", { class: "approval-state", dataset: { status: a.status }, text: t(key, { name: who }) }));
    if (a.status === "rejected" || a.status === "expired") setToolStatus(card, a.status);
    return box;
  }
  card.open = true;
  setToolStatus(card, "awaiting_approval");
  if (argsPre) argsPre.closest(".tool-section").hidden = true;  // the editable copy below replaces it
  const original = pretty(a.arguments);
  const area = h("textarea", { class: "mono approval-args", rows: String(Math.min(12, original.split("\n").length + 1)),
    value: original, disabled: !mayDecide, "aria-label": t("tool.arguments"), spellcheck: "false" });
  const approve = h("button", { type: "button", class: "primary act-approve", text: t("approval.approve"), disabled: !mayDecide });
  const edit = h("button", { type: "button", class: "act-approve-edit", text: t("approval.edit"), disabled: true });
  const reject = h("button", { type: "button", class: "danger act-reject", text: t("approval.reject"), disabled: !mayDecide });
  const problem = h("div", { class: "error small approval-error", hidden: true });
  const changed = () => area.value.trim() !== original.trim();
  area.addEventListener("input", () => {
    approve.disabled = !mayDecide || changed();
    edit.disabled = !mayDecide || !changed();
    problem.hidden = true;
  });
  const send = (decision) => async () => {
    let args;
    if (decision === "edit") {
      try { args = JSON.parse(area.value); } catch (e) { args = null; }
      if (!args || typeof args !== "object" || Array.isArray(args)) {
        problem.textContent = t("approval.badJson");
        problem.hidden = false;
        return;
      }
    }
    for (const b of [approve, edit, reject]) b.disabled = true;
    try {
      await decide(decision, args);
    } catch (e) {
      problem.textContent = e.message || String(e);
      problem.hidden = false;
      approve.disabled = !mayDecide || changed();
      edit.disabled = !mayDecide || !changed();
      reject.disabled = !mayDecide;
    }
  };
  approve.addEventListener("click", send("approve"));
  edit.addEventListener("click", send("edit"));
  reject.addEventListener("click", send("reject"));
  box.append(...[h("div", { class: "approval-title", text: t("approval.title") }),
    mayDecide ? h("div", { class: "muted small", text: t("approval.argumentsHint") }) : null,
    area, problem, h("div", { class: "row approval-actions" }, approve, edit, reject),
    mayDecide ? null : h("div", { class: "muted small approval-waiting",
      text: t("approval.waitingFor", { name: requester(a.requestedBy) }) })].filter(Boolean));
  return box;
}

export function setToolResult(card, result, status) {
  if (card.dataset.status === "rejected" || card.dataset.status === "expired") status = card.dataset.status;  // declined: not run
  card.dataset.status = status;
  card.querySelector(".tool-status").textContent = t(`tool.${status}`);
  const wrap = card.querySelector(".tool-result-wrap");
  wrap.hidden = false;
  card.querySelector(".tool-result").textContent = typeof result === "string" ? result : JSON.stringify(result, null, 2);
}

function bodyFor(m, body) {
  if (m.deleted) {
    body.appendChild(h("em", { class: "muted", text: t("message.deleted") }));
    return;
  }
  const meta = m.metadata || {};
  if (m.type === "image") {
    const url = localUrl(m.content);
    if (url !== null) {
      body.appendChild(h("img", { class: "msg-image", src: url, alt: fileName(m), loading: "lazy" }));
    }
    return;
  }
  if (m.type === "file") {
    const url = localUrl(m.content);
    body.appendChild(h("a", { class: "file-link", href: url ?? "#", download: fileName(m) },
      h("span", { text: "📎 " }), h("span", { class: "file-name", text: fileName(m) }),
      meta.size ? h("span", { class: "muted", text: ` (${fmtBytes(meta.size)})` }) : null));
    return;
  }
  if (m.type === "tool_call") {
    const card = toolCard(meta.toolName || meta.name || "tool", meta.arguments ?? m.content, "calling");
    card.dataset.messageId = meta.replyTo || meta.messageId || "";
    if (meta.callId) card.dataset.callId = meta.callId;
    if (meta.approval) {  // a call that waited for approval: who decided stays on the card
      approvalBox(card, { ...meta.approval, editedArguments: meta.arguments },
        { mayDecide: false, requester: userName, decide: async () => {} });
    }
    body.appendChild(card);
    return;
  }
  if (m.type === "tool_result") {
    const name = meta.toolName || meta.name || "tool";
    const failed = meta.isError || meta.error || meta.status === "error";
    const card = toolCard(name, meta.arguments ?? "", failed ? "error" : "completed");
    setToolResult(card, meta.result ?? m.content, failed ? "error" : "completed");
    body.appendChild(card);
    return;
  }
  const attached = Array.isArray(meta.attachments) ? meta.attachments : [];
  if (attached.length) body.appendChild(attachmentsEl(attached));
  const text = h("div", { class: "md" });
  renderInto(text, m.content || "", t);
  if (m.agentId) linkCitations(text, m);
  body.appendChild(text);
  if (m.status === "interrupted") body.appendChild(h("div", { class: "msg-flag", text: t("message.interrupted") }));
  if (m.status === "stopped") body.appendChild(h("div", { class: "msg-flag", text: t("message.stopped") }));
  if (m.status === "error") body.appendChild(failureEl(m));
}

// A failed reply: the reason in plain words (the server's reason code), and Retry.
export function failureText(err) {
  if (!err) return t("message.failed");
  if (typeof err === "string") return err;
  const key = `reason.${err.reason}`;
  const said = t(key);
  return said !== key ? said : (err.error || t("message.failed"));
}

function failureEl(m) {
  const err = (m.metadata || {}).error;
  const box = h("div", { class: "msg-flag error", dataset: { reason: (err && err.reason) || "" } },
    h("span", { class: "failure-text", text: failureText(err) }));
  if (m.agentId && !m.inherited) {
    const btn = h("button", { type: "button", class: "link-btn act-retry", text: t("message.retry") });
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      try {
        await post(`/api/messages/${encodeURIComponent(m.id)}/retry`, {});
      } catch (e) {
        btn.disabled = false;
        report(e);
      }
    });
    box.appendChild(btn);
  }
  return box;
}

function attachmentsEl(items) {
  const box = h("div", { class: "msg-attachments" });
  for (const a of items) {
    const url = String(a.url || "");
    if (!url.startsWith("/")) continue;
    if (/^image\//.test(a.mimeType || "") || /\.(png|jpe?g|gif|webp)$/i.test(url)) {
      box.appendChild(h("img", { class: "msg-image", src: url, alt: a.name || "", loading: "lazy" }));
    } else {
      box.appendChild(h("a", { class: "file-link", href: url, download: a.name || "" },
        h("span", { text: "📎 " }), h("span", { class: "file-name", text: a.name || fileName({ content: url }) }),
        a.size ? h("span", { class: "muted", text: ` (${fmtBytes(a.size)})` }) : null));
    }
  }
  return box;
}

// ------------------------------------------------------------------ actions on a message

async function branchFrom(m) {
  try {
    const r = await post(`/api/channels/${encodeURIComponent(m.channelId)}/fork`, { messageId: m.id });
    await loadChannels();
    location.hash = `#/c/${encodeURIComponent(r.id)}`;
  } catch (e) {
    report(e);
  }
}

function versionNav(el, m) {
  const versions = m._versions || [];
  if (versions.length < 2) return null;
  const at = Math.max(0, versions.findIndex((v) => v.id === m.id));
  const go = (delta) => {
    const next = versions[at + delta];
    if (next) el.replaceWith(messageEl({ ...next, _versions: versions }));
  };
  return h("span", { class: "versions" },
    h("button", { type: "button", class: "link-btn act-prev", title: t("message.versionPrev"), text: "‹",
      disabled: at === 0, onclick: () => go(-1) }),
    h("span", { class: "version-pos", text: `${at + 1}/${versions.length}` }),
    h("button", { type: "button", class: "link-btn act-next", title: t("message.versionNext"), text: "›",
      disabled: at === versions.length - 1, onclick: () => go(1) }));
}

function actionsFor(el, m, own) {
  const actions = h("div", { class: "msg-actions" });
  const text = m.type === "text" || !m.type;
  if (m.inherited) {
    actions.appendChild(h("span", { class: "muted", text: t("message.inherited") }));
  } else if (own) {
    if (text) {
      actions.appendChild(h("button", { type: "button", class: "link-btn act-edit", text: t("message.edit"),
        onclick: () => startEdit(el) }));
    }
    actions.appendChild(h("button", { type: "button", class: "link-btn act-delete", text: t("message.delete"),
      onclick: () => deleteMessage(el) }));
  } else if (m.agentId && text && m.status !== "streaming") {
    const copy = h("button", { type: "button", class: "link-btn act-copy", text: t("message.copy") });
    copy.addEventListener("click", () => copyText(m.content || "", copy, t, ["message.copied", "message.copy"]));
    actions.appendChild(copy);
    if (m.metadata && m.metadata.replyTo && !m.metadata.chainId) {
      actions.appendChild(h("button", { type: "button", class: "link-btn act-regenerate", text: t("message.regenerate"),
        onclick: () => post(`/api/messages/${encodeURIComponent(m.id)}/regenerate`, {}).catch(report) }));
    }
    const nav = versionNav(el, m);
    if (nav) actions.appendChild(nav);
  }
  if (text && m.status !== "streaming" && !m.deleted && m.id) {
    actions.appendChild(h("button", { type: "button", class: "link-btn act-branch", text: t("message.branch"),
      onclick: () => branchFrom(m) }));
  }
  return actions.childNodes.length ? actions : null;
}

// A workflow's input says which workflow it started; each step's reply says which step it is.
export function workflowTag(m) {
  const wf = (m.metadata || {}).workflow;
  if (!wf || typeof wf !== "object") return null;
  const text = wf.name ? t("wf.tagStarted", { name: wf.name }) : wf.step ? t("wf.tagStep", { step: wf.step }) : "";
  return text ? h("span", { class: "msg-workflow muted", text: `▶ ${text}` }) : null;
}

export function messageEl(m) {
  const own = isOwn(m);
  const who = m.agentId ? S.agents.get(m.agentId) : null;
  const name = m.agentId ? agentName(m.agentId) : userName(m.userId);
  const el = h("article", {
    class: `msg${own ? " own" : ""}${m.agentId ? " agent" : ""}${m.inherited ? " inherited" : ""} type-${m.type || "text"}`,
    dataset: { id: m.id, created: m.createdAt || "", status: m.status || "done", group: m.versionGroup || m.id },
  });
  el._msg = m;
  el.appendChild(avatarEl(who ? who.avatar || who.name : personAvatar(person(m.userId) || { displayName: name })));
  const main = h("div", { class: "msg-main" },
    h("div", { class: "msg-head" },
      h("span", { class: "msg-name", text: name }),
      h("time", { class: "msg-time", datetime: m.createdAt || "", text: fmtTime(m.createdAt) }),
      m.updatedAt && !m.deleted ? h("span", { class: "msg-edited muted", text: t("message.edited") }) : null,
      workflowTag(m)));
  const body = h("div", { class: "msg-body" });
  bodyFor(m, body);
  main.appendChild(body);
  if (!m.deleted) {
    const actions = actionsFor(el, m, own);
    if (actions) main.appendChild(actions);
  }
  el.appendChild(main);
  if (m.status === "streaming") {
    el.classList.add("streaming");
    body.appendChild(h("span", { class: "dots" }, h("i"), h("i"), h("i")));
  }
  return el;
}

export function replaceMessage(m) {
  const old = list().querySelector(`[data-id="${CSS.escape(m.id)}"]`);
  if (!old) return false;
  const merged = { ...old._msg, ...m };
  const el = messageEl(merged);
  // keep live tool cards of a streamed reply
  old.querySelectorAll(".live-tools").forEach((n) => el.querySelector(".msg-body").prepend(n));
  old.replaceWith(el);
  return true;
}

function startEdit(el) {
  const m = el._msg;
  const body = el.querySelector(".msg-body");
  if (el.querySelector(".edit-form")) return;
  const ta = h("textarea", { class: "edit-input", value: m.content || "" });
  const cancel = () => { form.remove(); body.hidden = false; };
  const form = h("form", { class: "edit-form" }, ta,
    h("div", { class: "row" },
      h("button", { type: "submit", class: "primary act-resend", text: t("message.resend") }),
      h("button", { type: "button", class: "act-cancel", text: t("common.cancel"), onclick: cancel })));
  form._cancel = cancel;
  ta.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { ev.preventDefault(); ev.stopPropagation(); cancel(); }
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const content = ta.value.trim();
    if (!content) return;
    try {
      // the edited text is answered again; the former answers stay as versions
      const r = await post(`/api/messages/${encodeURIComponent(m.id)}/resend`, { content });
      replaceMessage(r.message || { ...m, content, updatedAt: new Date().toISOString() });
    } catch (e) {
      report(e);  // the draft stays in the form
    }
  });
  body.hidden = true;
  body.after(form);
  ta.focus();
}

async function deleteMessage(el) {
  if (!window.confirm(t("message.confirmDelete"))) return;
  const m = el._msg;
  try {
    await del(`/api/messages/${encodeURIComponent(m.id)}`);
    replaceMessage({ ...m, deleted: true, content: "" });
  } catch (e) {
    report(e);
  }
}
