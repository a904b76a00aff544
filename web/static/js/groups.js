// New direct messages and the group dialog (create, edit, delete).
import { del, post, put } from "./api.js";
import { avatarEl, clear, h, roleAtLeast } from "./dom.js";
import { t } from "./i18n.js";
import { S, agentName, report } from "./state.js";
import { busy, field, modal } from "./ui.js";
import { loadChannels } from "./sidebar.js";
import { openChannel } from "./chat.js";

export function newDm() {
  const body = h("div", { class: "agent-pick" });
  const close = modal(t("chat.newDm"), body);
  for (const a of S.agents.values()) {
    body.appendChild(h("button", { type: "button", class: "agent-option", dataset: { agentId: a.id },
      onclick: async () => {
        const existing = [...S.channels.values()].find((c) => c.type === "dm" && (c.agentIds || [])[0] === a.id);
        try {
          let id = existing && existing.id;
          if (!id) {
            const r = await post("/api/channels", { name: a.name, type: "dm", agentIds: [a.id] });
            id = (r.channel || r).id;
            await loadChannels();
          }
          close();
          location.hash = `#/c/${encodeURIComponent(id)}`;
        } catch (e) {
          report(e);
        }
      } }, avatarEl(a.avatar || a.name), h("span", { class: "name", text: a.name }),
    h("span", { class: "muted", text: a.description || "" })));
  }
  if (!S.agents.size) body.appendChild(h("p", { class: "muted", text: t("agents.none") }));
}

export function editGroup(c) {
  const isNew = !c;
  const name = h("input", { id: "group-name", value: c ? c.name : "", required: true, maxlength: "80" });
  const members = new Set(c ? c.agentIds || [] : []);
  const chain = c ? [...(c.chain || [])] : [];
  const memberBox = h("div", { class: "checks", id: "group-members" });
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
  chainAdd.addEventListener("change", () => {
    if (chainAdd.value) chain.push(chainAdd.value);
    refresh();
  });
  refresh();
  const save = h("button", { type: "submit", class: "primary", id: "group-save", text: t("common.save") });
  const form = h("form", { class: "form" },
    field(t("group.name"), name),
    field(t("group.members"), memberBox),
    field(t("group.default"), defaultSel, t("group.defaultHint")),
    field(t("group.chain"), h("div", {}, chainList, chainAdd), t("group.chainHint")),
    h("label", { class: "check" }, approval, h("span", { text: t("group.approval") })),
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
      const r = await post("/api/channels", { name: groupName, type: "group", agentIds: [...members], defaultAgentId });
      id = (r.channel || r).id;
    } else {
      id = c.id;
      const url = `/api/channels/${encodeURIComponent(id)}`;
      const before = new Set(c.agentIds || []);
      const added = [...members].filter((a) => !before.has(a));
      if (added.length) await post(`${url}/members`, { agentIds: added });
      await put(url, { name: groupName, defaultAgentId });
      const removed = [...before].filter((a) => !members.has(a));
      if (removed.length || chain.length || (c.chain || []).length) {
        await put(`${url}/chain`, { agentIds: chain, approval: approval.checked });
      }
      for (const a of removed) await del(`${url}/members/${encodeURIComponent(a)}`);
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
