// New direct messages and the group dialog (create, edit, delete).
import { del, post, put } from "./api.js";
import { avatarEl, clear, h, roleAtLeast } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, person, personAvatar, report, userName } from "./state.js";
import { busy, field, modal, openPanel } from "./ui.js";
import { loadChannels } from "./sidebar.js";
import { openChannel } from "./chat.js";
import { openWorkflows } from "./workflows.js";

// Open the DM with an agent ({agentId}) or a person ({userId}), creating it on first use.
export async function openDm({ agentId, userId }) {
  const existing = [...S.channels.values()].find((c) => c.type === "dm" && (agentId
    ? (c.agentIds || [])[0] === agentId
    : !(c.agentIds || []).length && (c.userIds || []).includes(userId) && (c.userIds || []).includes(S.me.id)));
  let id = existing && existing.id;
  if (!id) {
    const name = agentId ? (S.agents.get(agentId) || {}).name || agentId : userName(userId);
    const r = await post("/api/channels", agentId ? { name, type: "dm", agentIds: [agentId] }
      : { name, type: "dm", userIds: [userId] });
    id = (r.channel || r).id;
    await loadChannels();
  }
  location.hash = `#/c/${encodeURIComponent(id)}`;
}

// The people the caller may start a DM with: everyone else, guests only for admins (the server's rule).
export function dmPeople() {
  return [...S.people.values()].filter((u) => u.id !== S.me.id
    && (u.role !== "guest" || roleAtLeast(S.me.role, "admin")));
}

export function newDm() {
  const body = h("div", { class: "agent-pick" });
  const close = modal(t("chat.newDm"), body);
  const pick = (target) => async () => {
    try {
      await openDm(target);
      close();
    } catch (e) {
      report(e);
    }
  };
  body.appendChild(h("h4", { class: "list-head", text: t("team.agents") }));
  for (const a of S.agents.values()) {
    body.appendChild(h("button", { type: "button", class: "agent-option", dataset: { agentId: a.id },
      onclick: pick({ agentId: a.id }) }, avatarEl(a.avatar || a.name), h("span", { class: "name", text: a.name }),
    h("span", { class: "muted", text: a.description || "" })));
  }
  if (!S.agents.size) body.appendChild(h("p", { class: "muted", text: t("agents.none") }));
  const people = dmPeople();
  if (people.length) body.appendChild(h("h4", { class: "list-head", text: t("team.people") }));
  for (const u of people) {
    body.appendChild(h("button", { type: "button", class: "agent-option person-option", dataset: { userId: u.id },
      onclick: pick({ userId: u.id }) }, avatarEl(personAvatar(u)), h("span", { class: "name", text: u.displayName || u.username }),
    h("span", { class: "muted", text: t(`role.${u.role}`) })));
  }
}

export function editGroup(c) {
  const isNew = !c;
  const name = h("input", { id: "group-name", value: c ? c.name : "", required: true, maxlength: "80" });
  const members = new Set(c ? c.agentIds || [] : []);
  const chain = c ? [...(c.chain || [])] : [];
  const memberBox = h("div", { class: "checks", id: "group-members" });
  const people = new Set(c ? (c.userIds || []).filter((id) => id !== S.me.id) : []);
  const peopleBox = h("div", { class: "checks", id: "group-people" });
  const defaultSel = h("select", { id: "group-default" });
  const chainList = h("ol", { class: "chain-edit", id: "group-chain" });
  const chainAdd = h("select", { id: "group-chain-add" });
  const approval = h("input", { type: "checkbox", id: "group-approval",
    checked: !!(c && c.config && c.config.chainApproval) });

  const refresh = () => {
    clear(defaultSel).appendChild(h("option", { value: "", text: t("group.noDefault") }));
    clear(chainAdd).appendChild(h("option", { value: "", text: t("group.chainAdd") }));
    for (const a of S.agents.values()) {
      if (!members.has(a.id)) continue;
      defaultSel.appendChild(h("option", { value: a.id, text: a.name, selected: c && c.defaultAgentId === a.id }));
      chainAdd.appendChild(h("option", { value: a.id, text: a.name }));
    }
    clear(chainList);
    chain.forEach((id, i) => {
      chainList.appendChild(h("li", {}, h("span", { text: agentName(id) }),
        h("button", { type: "button", class: "link-btn", text: "↑", disabled: i === 0,
          onclick: () => { [chain[i - 1], chain[i]] = [chain[i], chain[i - 1]]; refresh(); } }),
        h("button", { type: "button", class: "link-btn", text: "✕",
          onclick: () => { chain.splice(i, 1); refresh(); } })));
    });
  };
  for (const a of S.agents.values()) {
    const box = h("input", { type: "checkbox", value: a.id, checked: members.has(a.id), onchange: (ev) => {
      if (ev.target.checked) members.add(a.id);
      else {
        members.delete(a.id);
        for (let i = chain.length - 1; i >= 0; i--) if (chain[i] === a.id) chain.splice(i, 1);
      }
      refresh();
    } });
    memberBox.appendChild(h("label", { class: "check" }, box, avatarEl(a.avatar || a.name, "avatar small"),
      h("span", { text: a.name })));
  }
  const candidates = new Map([...S.people.values()].filter((u) => u.id !== S.me.id).map((u) => [u.id, u]));
  for (const id of people) if (!candidates.has(id)) candidates.set(id, person(id) || { id, displayName: userName(id), role: "member" });
  for (const u of candidates.values()) {
    const box = h("input", { type: "checkbox", value: u.id, checked: people.has(u.id), onchange: (ev) => {
      if (ev.target.checked) people.add(u.id);
      else people.delete(u.id);
    } });
    peopleBox.appendChild(h("label", { class: "check", dataset: { userId: u.id } }, box, avatarEl(personAvatar(u), "avatar small"),
      h("span", { text: u.displayName || u.username }), h("span", { class: `pill role-${u.role}`, text: t(`role.${u.role}`) })));
  }
  if (!candidates.size) peopleBox.appendChild(h("p", { class: "muted small", text: t("group.noPeople") }));
  chainAdd.addEventListener("change", () => {
    if (chainAdd.value) chain.push(chainAdd.value);
    refresh();
  });
  refresh();
  const save = h("button", { type: "submit", class: "primary", id: "group-save", text: t("common.save") });
  const form = h("form", { class: "form" },
    field(t("group.name"), name),
    field(t("group.people"), peopleBox),
    field(t("group.members"), memberBox),
    field(t("group.default"), defaultSel, t("group.defaultHint")),
    field(t("group.chain"), h("div", {}, chainList, chainAdd), t("group.chainHint")),
    h("label", { class: "check" }, approval, h("span", { text: t("group.approval") })),
    isNew ? null : field(t("wf.title"), h("button", { type: "button", id: "group-workflows", text: t("wf.manage"),
      onclick: () => { close(); openWorkflows(); } }), t("wf.none")),
    h("div", { class: "row" }, save,
      !isNew && roleAtLeast(S.me.role, "admin") ? h("button", { type: "button", class: "danger", text: t("group.delete"),
        onclick: async () => {
          if (!window.confirm(t("group.confirmDelete"))) return;
          try {
            await del(`/api/channels/${encodeURIComponent(c.id)}`);
            close();
            S.active = null;
            await loadChannels();
            location.hash = "#/";
          } catch (e) { report(e); }
        } }) : null));
  const close = modal(isNew ? t("chat.newGroup") : t("group.settings"), form, { id: "group" });
  form.addEventListener("submit", busy(save, async () => {
    const groupName = name.value.trim();
    if (!groupName) throw new Error(t("group.nameRequired"));
    const defaultAgentId = defaultSel.value || null;
    let id;
    if (isNew) {
      const r = await post("/api/channels", { name: groupName, type: "group", agentIds: [...members], userIds: [...people],
        defaultAgentId });
      id = (r.channel || r).id;
    } else {
      id = c.id;
      const url = `/api/channels/${encodeURIComponent(id)}`;
      const before = new Set(c.agentIds || []);
      const added = [...members].filter((a) => !before.has(a));
      const hadPeople = new Set(c.userIds || []);
      const joining = [...people].filter((u) => !hadPeople.has(u));
      if (added.length || joining.length) await post(`${url}/members`, { agentIds: added, userIds: joining });
      await put(url, { name: groupName, defaultAgentId });
      const removed = [...before].filter((a) => !members.has(a));
      if (removed.length || chain.length || (c.chain || []).length) {
        await put(`${url}/chain`, { agentIds: chain, approval: approval.checked });
      }
      for (const a of removed) await del(`${url}/members/${encodeURIComponent(a)}`);
      for (const u of hadPeople) {
        if (u !== S.me.id && !people.has(u)) await del(`${url}/members/${encodeURIComponent(u)}`);
      }
    }
    if (isNew && chain.length) {
      await put(`/api/channels/${encodeURIComponent(id)}/chain`, { agentIds: chain, approval: approval.checked });
    }
    await loadChannels();
    close();
    if (isNew) location.hash = `#/c/${encodeURIComponent(id)}`;
    else openChannel(id);
  }));
}

// Who is in the room: people with their avatars and roles, then the agents.
export function openMembers(c) {
  if (!c) return;
  const body = h("div", { class: "members", id: "member-list" });
  body.appendChild(h("h4", { class: "list-head", text: t("team.people") }));
  for (const id of c.userIds || []) {
    const u = person(id) || { id, displayName: userName(id), role: "" };
    body.appendChild(h("div", { class: "member-row", dataset: { userId: id, kind: "person" } },
      avatarEl(personAvatar(u)), h("span", { class: "grow name", text: u.displayName || u.username }),
      u.role ? h("span", { class: `pill role-${u.role}`, text: t(`role.${u.role}`) }) : null));
  }
  if ((c.agentIds || []).length) body.appendChild(h("h4", { class: "list-head", text: t("team.agents") }));
  for (const id of c.agentIds || []) {
    const a = S.agents.get(id) || { name: agentName(id) };
    body.appendChild(h("div", { class: "member-row", dataset: { agentId: id, kind: "agent" } },
      avatarEl(a.avatar || a.name), h("span", { class: "grow name", text: a.name }),
      h("span", { class: "pill", text: t("team.agent") })));
  }
  openPanel("members", t("group.membersTitle", { n: (c.userIds || []).length + (c.agentIds || []).length }), body);
}
