// An agent's knowledge panel: upload documents and watch them being indexed.
import { del, get, upload } from "./api.js";
import { clear, h, roleAtLeast, toast } from "./dom.js";
import { t } from "./i18n.js";
import { S, errorText, on, report } from "./state.js";
import { closePanel, currentPanel, openPanel } from "./ui.js";

let ragReload = null;
let ragPoll = null;

function onRagProgress(d) {
  const row = document.querySelector(`.doc[data-id="${CSS.escape(d.documentId || "")}"]`);
  if (row) updateDocRow(row, d);
  if (d.status === "ready" || d.status === "failed" || d.status === "indexed") {
    if (ragReload) ragReload();
  }
}

const DONE_STATES = ["ready", "indexed", "done", "failed", "error"];
const KINDS = [".txt", ".text", ".md", ".markdown", ".html", ".htm", ".xhtml", ".pdf", ".docx", ".csv", ".log"];
const readable = (file) => KINDS.some((k) => file.name.toLowerCase().endsWith(k));

// Many files (a selection, a folder, a drop) go up one after another in one view: one bar for the
// whole batch, the file being sent, the ones that failed and why; one notice at the end.
async function uploadAll(files, agent, box, reload) {
  if (!files.length) return;
  const bar = h("progress", { max: "1", value: "0" });
  const status = h("span", { class: "batch-status" });
  const failures = h("ul", { class: "batch-failures" });
  const view = h("div", { class: "upload-batch", role: "status" }, h("div", { class: "upload-row" }, status, bar), failures);
  clear(box).appendChild(view);
  let sent = 0;
  for (const [i, file] of files.entries()) {
    status.textContent = t("knowledge.batch", { i: i + 1, n: files.length, name: file.name });
    try {
      await upload("/api/rag/upload", { file, agentId: agent.id }, (p) => { bar.value = (i + p) / files.length; });
      sent += 1;
    } catch (e) {
      failures.appendChild(h("li", { class: "error" }, h("span", { class: "file-name", text: file.name }), ` — ${errorText(e)}`));
    }
    bar.value = (i + 1) / files.length;
    await reload();
  }
  const failed = files.length - sent;
  status.textContent = t(failed ? "knowledge.batchFailed" : "knowledge.batchDone", { sent, n: files.length, failed });
  toast(status.textContent, failed ? "error" : "info");
  if (!failed) setTimeout(() => view.remove(), 4000);
  else view.appendChild(h("button", { type: "button", class: "link-btn", text: t("common.dismiss"), onclick: () => view.remove() }));
}

function updateDocRow(row, d) {
  const status = d.status || row.dataset.status;
  row.dataset.status = status;
  row.querySelector(".doc-state").textContent = t(`knowledge.state.${status}`) === `knowledge.state.${status}` ? status : t(`knowledge.state.${status}`);
  const bar = row.querySelector("progress");
  if (d.progress !== undefined && bar) bar.value = Number(d.progress) > 1 ? Number(d.progress) / 100 : Number(d.progress);
  if (bar) bar.hidden = DONE_STATES.includes(status);
  if (d.chunks !== undefined) row.querySelector(".doc-chunks").textContent = t("knowledge.chunks", { n: d.chunks });
  const eta = row.querySelector(".doc-eta");
  if (eta) {
    const busy = status === "processing" && d.progress !== undefined;
    const pct = Math.floor((Number(d.progress) > 1 ? Number(d.progress) / 100 : Number(d.progress)) * 100);
    const left = d.etaSeconds === undefined || d.etaSeconds === null ? "" : t("knowledge.left", { s: Math.ceil(d.etaSeconds) });
    eta.textContent = busy ? [`${pct}%`, left].filter(Boolean).join(" · ") : "";
  }
}

export async function openKnowledge(agent) {
  if (!agent) return;
  const body = h("div", { class: "knowledge" });
  const listEl = h("div", { class: "doc-list" });
  const fileIn = h("input", { type: "file", id: "knowledge-file", accept: KINDS.join(","), multiple: true });
  const folderIn = h("input", { type: "file", id: "knowledge-folder", multiple: true });
  folderIn.webkitdirectory = true;
  const uploads = h("div", { class: "uploads" });
  const q = encodeURIComponent(agent.id);
  const load = async () => {
    try {
      const r = await get(`/api/rag/documents?agentId=${q}`);
      clear(listEl);
      const docs = r.documents || [];
      if (!docs.length) listEl.appendChild(h("p", { class: "muted", text: t("knowledge.none") }));
      for (const d of docs) {
        const row = h("div", { class: "doc", dataset: { id: d.id, status: d.status } },
          h("span", { class: "doc-name", text: d.name || d.filename || d.id }),
          h("span", { class: "doc-state pill" }),
          h("span", { class: "doc-chunks muted" }),
          h("progress", { max: "1", value: "0" }),
          h("span", { class: "doc-eta muted" }),
          d.error ? h("span", { class: "error doc-error", text: d.error }) : null,
          roleAtLeast(S.me.role, "admin") ? h("button", { type: "button", class: "link-btn danger-text", text: t("message.delete"),
            onclick: async () => {
              if (!window.confirm(t("knowledge.confirmDelete"))) return;
              try {
                await del(`/api/rag/documents/${encodeURIComponent(d.id)}?agentId=${q}`);
                await load();
              } catch (e) { report(e); }
            } }) : null);
        updateDocRow(row, d);
        listEl.appendChild(row);
      }
      clearTimeout(ragPoll);
      if (docs.some((d) => !DONE_STATES.includes(d.status)) && currentPanel() === "knowledge") ragPoll = setTimeout(load, 1500);
    } catch (e) {
      clear(listEl).appendChild(h("p", { class: "error", text: errorText(e) }));
    }
  };
  ragReload = load;
  let busy = false;
  const send = async (files, input) => {
    if (busy) return toast(t("knowledge.busy"));
    busy = true;
    try {
      await uploadAll(files, agent, uploads, load);
    } finally {
      busy = false;
      if (input) input.value = "";
    }
  };
  // chosen files go up as chosen (the server says what it cannot read); a folder's other files are left out
  fileIn.addEventListener("change", () => send(Array.from(fileIn.files), fileIn));
  folderIn.addEventListener("change", () => send(Array.from(folderIn.files).filter(readable), folderIn));
  body.addEventListener("dragover", (e) => { e.preventDefault(); body.classList.add("dropping"); });
  body.addEventListener("dragleave", () => body.classList.remove("dropping"));
  body.addEventListener("drop", (e) => {
    e.preventDefault();
    body.classList.remove("dropping");
    send(Array.from(e.dataTransfer.files).filter(readable));
  });
  body.append(h("div", { class: "upload-actions" },
    h("label", { class: "upload-label button" }, h("span", { text: t("knowledge.upload") }), fileIn),
    h("label", { class: "upload-label button secondary" }, h("span", { text: t("knowledge.uploadFolder") }), folderIn)),
    h("p", { class: "muted small", text: t("knowledge.types") }), uploads, listEl);
  openPanel("knowledge", `${t("knowledge.title")} · ${agent.name}`, body);
  await load();
}

on("rag_progress", onRagProgress);
on("channel:opened", () => { if (currentPanel() === "knowledge") closePanel(); });
