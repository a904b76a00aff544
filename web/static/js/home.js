// The first screen, when no chat is open: the team's agents (with a Chat button for those who may
// start one), the people, and which model answers (a configured one, or the offline demo model).
import { $, avatarEl, clear, h, roleAtLeast } from "./dom.js";
import { t } from "./i18n.js";
import { S, on, personAvatar, report } from "./state.js";
import { dmPeople, openDm } from "./groups.js";

export function renderHome() {
  const home = clear($("#home"));
  const model = (S.team && S.team.model) || {};
  home.appendChild(h("p", { class: `model-line ${model.builtin ? "demo" : "real"}`, id: "model-line",
    text: !model.configured ? t("home.noModel")
      : model.builtin ? t("home.demoModel") : t("home.realModel", { model: model.model }) }));
  const mayStart = roleAtLeast(S.me.role, "member");
  if (!S.channels.size) {
    home.appendChild(h("p", { class: "home-hint", id: "home-hint",
      text: t(mayStart ? "chat.noChats" : "chat.noChatsGuest") }));
  }
  home.appendChild(h("h3", { text: t("team.agents") }));
  const cards = h("div", { class: "agent-cards", id: "agent-cards" });
  for (const a of S.agents.values()) {
    cards.appendChild(h("div", { class: "agent-card", dataset: { agentId: a.id } },
      avatarEl(a.avatar || a.name, "avatar large"),
      h("div", { class: "agent-card-main" }, h("strong", { class: "name", text: a.name }),
        h("span", { class: "muted small", text: a.description || "" })),
      mayStart ? h("button", { type: "button", class: "primary act-chat", text: t("home.chat"),
        onclick: () => openDm({ agentId: a.id }).catch(report) }) : null));
  }
  if (!S.agents.size) cards.appendChild(h("p", { class: "muted", text: t("agents.none") }));
  home.appendChild(cards);
  const people = [...S.people.values()];
  home.appendChild(h("h3", { text: t("team.people") }));
  const startable = new Set(mayStart ? dmPeople().map((u) => u.id) : []);
  const list = h("div", { class: "people-list", id: "people-list" });
  for (const u of people) {
    list.appendChild(h("div", { class: "person-card", dataset: { userId: u.id } },
      avatarEl(personAvatar(u)),
      h("span", { class: "grow name", text: u.displayName || u.username }),
      u.id === S.me.id ? h("span", { class: "muted small", text: t("team.you") }) : null,
      h("span", { class: `pill role-${u.role}`, text: t(`role.${u.role}`) }),
      startable.has(u.id) ? h("button", { type: "button", class: "act-message", text: t("home.message"),
        onclick: () => openDm({ userId: u.id }).catch(report) }) : null));
  }
  home.appendChild(list);
}

on("home:shown", renderHome);
