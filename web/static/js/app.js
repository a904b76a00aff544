// The app's entry point: loads the signed-in user, wires the page's buttons, routes the
// location hash to a view, and starts the socket. The views live in their own modules
// (sidebar, chat, composer, collab, groups, memory, knowledge, agents, settings, account,
// search); they share state.js and talk through its event bus, never by importing app.js.
import { del, get, post, put } from "./api.js";
import { $, $$, h, roleAtLeast } from "./dom.js";
import { loadLang, setLang, t, translate } from "./i18n.js";
import { Socket } from "./ws.js";
import { S, readState, report } from "./state.js";
import { closePanel, cycleTheme, modal, syncCodeTheme } from "./ui.js";
import { channelAgents, loadAgents, loadChannels, loadUsers, onConnState, renderChatList } from "./sidebar.js";
import { list } from "./messages.js";
import { focusComposer, loadOlder, markRead, onFrame, openChannel, scroller, showEmpty } from "./chat.js";
import { wireComposer } from "./composer.js";
import { search } from "./search.js";
import { showRuns } from "./collab.js";
import { openWorkflows } from "./workflows.js";
import { editGroup, newDm, openMembers } from "./groups.js";
import "./home.js";
import { openMemory } from "./memory.js";
import { openKnowledge } from "./knowledge.js";
import { openAgents } from "./agents.js";
import { openSchedules } from "./schedules.js";
import { openSettings } from "./settings.js";
import { openAccount } from "./account.js";

const boot = JSON.parse(document.getElementById("boot").textContent);

function applyRole() {
  $$("[data-role-min]").forEach((el) => {
    if (!roleAtLeast(S.me.role, el.dataset.roleMin)) el.classList.add("role-hidden");
  });
}

// ------------------------------------------------------------------ routing

async function route() {
  const hash = location.hash || "";
  let m;
  if ((m = /^#\/c\/([^/]+)(?:\/m\/([^/]+))?$/.exec(hash))) {
    await openChannel(decodeURIComponent(m[1]), m[2] ? decodeURIComponent(m[2]) : null);
  } else if (hash === "#/settings") {
    openSettings();
  } else if (hash === "#/schedules") {
    openSchedules();
  } else if (hash === "#/agents") {
    openAgents();
  } else if (hash === "#/account") {
    openAccount();
  } else if (hash === "#/home") {
    S.active = null;
    $("#app").dataset.view = "chat";
    renderChatList();
    showEmpty(true);
  } else if (!S.active) {
    const first = [...S.channels.values()][0];
    if (first && window.matchMedia("(min-width: 800px)").matches) location.replace(`#/c/${encodeURIComponent(first.id)}`);
    else showEmpty(true);
  }
}

// ------------------------------------------------------------------ wiring

function wire() {
  wireComposer();
  scroller().addEventListener("scroll", () => { if (scroller().scrollTop < 80) loadOlder(); });
  list().addEventListener("click", (ev) => {
    const img = ev.target.closest(".msg-image");
    if (img) {
      $("#lightbox-img").src = img.src;
      $("#lightbox").hidden = false;
    }
  });
  $("#lightbox").addEventListener("click", () => { $("#lightbox").hidden = true; });
  // a click on the chat already open changes no route: it still lands in the composer
  $("#chat-list").addEventListener("click", (ev) => {
    const item = ev.target.closest(".chat-item");
    if (item && item.dataset.channelId === S.active) focusComposer();
  });
  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search($("#search-input").value);
  });
  $("#btn-back").addEventListener("click", () => {
    $("#app").dataset.view = "list";
    S.active = null;
    history.replaceState(null, "", "#/");
    renderChatList();
  });
  $("#btn-new-dm").addEventListener("click", () => newDm());
  $("#btn-new-group").addEventListener("click", () => editGroup(null));
  $("#btn-channel-settings").addEventListener("click", () => editGroup(S.channels.get(S.active)));
  $("#btn-memory").addEventListener("click", () => openMemory(channelAgents(S.channels.get(S.active))[0]));
  $("#btn-knowledge").addEventListener("click", () => openKnowledge(channelAgents(S.channels.get(S.active))[0]));
  $("#btn-collab").addEventListener("click", () => showRuns());
  $("#btn-workflows").addEventListener("click", () => openWorkflows());
  $("#btn-topic").addEventListener("click", newTopic);
  $("#btn-archive").addEventListener("click", toggleArchive);
  $("#btn-rename-topic").addEventListener("click", renameTopic);
  $("#btn-delete-topic").addEventListener("click", deleteTopic);
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape" || ev.defaultPrevented || $("#modal").open) return;
    // Esc: the image viewer, then an edit in progress, then the side panel (the modal closes itself)
    if (!$("#lightbox").hidden) { $("#lightbox").hidden = true; return; }
    const form = list().querySelector(".edit-form");
    if (form && form._cancel) { form._cancel(); return; }
    if (!$("#panel").hidden) closePanel();
  });
  $("#btn-members").addEventListener("click", () => openMembers(S.channels.get(S.active)));
  $("#brand").addEventListener("click", (ev) => {
    ev.preventDefault();
    location.hash = "#/home";
  });
  $("#btn-agents").addEventListener("click", () => { location.hash = "#/agents"; });
  $("#btn-settings").addEventListener("click", () => { location.hash = "#/settings"; });
  $("#btn-schedules").addEventListener("click", () => { location.hash = "#/schedules"; });
  $("#btn-account").addEventListener("click", () => { location.hash = "#/account"; });
  $("#panel-close").addEventListener("click", closePanel);
  $("#lang-select").addEventListener("change", (ev) => {
    setLang(ev.target.value);
    location.reload();
  });
  $("#btn-theme").addEventListener("click", cycleTheme);
  $("#btn-logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  window.addEventListener("xj:unauthorized", () => { location.href = "/login"; });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && S.active) {
      markRead(S.active);
      renderChatList();
    }
  });
}

// ------------------------------------------------------------------ topics and branches

// a one-field dialog naming a topic: `save(name)` stores it and opens what should be shown next
function topicDialog(id, label, title, value, save) {
  const input = h("input", { id: `${id}-name`, maxlength: "100", required: true, value });
  const form = h("form", { class: "topic-form" },
    h("label", { class: "field" }, h("span", { class: "field-label", text: label }), input),
    h("div", { class: "row" }, h("button", { type: "submit", id: `${id}-save`, class: "primary", text: title })));
  const close = modal(title, form, { id });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await save(input.value.trim());
      close();
    } catch (e) {
      report(e);
    }
  });
  input.select();
}

function newTopic() {
  const c = S.channels.get(S.active);
  if (!c) return;
  topicDialog("topic", t("topic.name"), t("topic.new"), "", async (name) => {
    const r = await post(`/api/channels/${encodeURIComponent(c.id)}/topics`, { name });
    await loadChannels();
    location.hash = `#/c/${encodeURIComponent(r.id)}`;
  });
}

function renameTopic() {
  const c = S.channels.get(S.active);
  if (!c) return;
  topicDialog("topic-rename", t("topic.rename"), t("topic.rename"), c.name || "", async (name) => {
    await put(`/api/channels/${encodeURIComponent(c.id)}`, { name });
    await loadChannels();
    await openChannel(c.id);
  });
}

// deleting a topic deletes its messages and its own branches; the parent conversation opens
async function deleteTopic() {
  const c = S.channels.get(S.active);
  if (!c || !window.confirm(t("topic.confirmDelete", { name: c.name || "" }))) return;
  try {
    await del(`/api/channels/${encodeURIComponent(c.id)}`);
    await loadChannels();
    location.hash = c.parentId && S.channels.has(c.parentId) ? `#/c/${encodeURIComponent(c.parentId)}` : "#/home";
  } catch (e) {
    report(e);
  }
}

async function toggleArchive() {
  const c = S.channels.get(S.active);
  if (!c) return;
  try {
    await post(`/api/channels/${encodeURIComponent(c.id)}/archive`, { archived: !c.archived });
    await loadChannels();
    await openChannel(c.id);
  } catch (e) {
    report(e);
  }
}

async function logout() {
  try { await post("/api/logout"); } catch (e) { /* leaving anyway */ }
  if (S.socket) S.socket.close();
  location.href = "/login";
}

async function main() {
  await loadLang(boot.lang);
  translate();
  syncCodeTheme();
  readState();
  try {
    const r = await get("/api/me");
    S.me = r.user || r;
  } catch (e) {
    location.href = "/login";
    return;
  }
  $("#me-name").textContent = S.me.displayName || S.me.username;
  document.body.dataset.role = S.me.role;
  applyRole();
  wire();
  await Promise.all([loadAgents(), loadUsers()]);
  S.socket = new Socket(onFrame, onConnState);
  S.socket.connect();
  try {
    await loadChannels();
  } catch (e) {
    report(e);
  }
  await route();
  document.body.dataset.ready = "app";
  if ("serviceWorker" in navigator && boot.sw !== false) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {});
  }
}

main();
