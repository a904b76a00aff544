// Login and invite pages.
import { post } from "./api.js";
import { loadLang, setLang, t } from "./i18n.js";

const boot = JSON.parse(document.getElementById("boot").textContent);

document.querySelectorAll("[data-lang]").forEach((a) => a.addEventListener("click", (ev) => {
  ev.preventDefault();
  setLang(a.dataset.lang);
  location.reload();
}));

function showError(el, err) {
  el.hidden = false;
  const key = `error.${err.code}`;
  const known = t(key);
  el.textContent = known !== key ? known : err.message;
}

async function start() {
  await loadLang(boot.lang);
  const login = document.getElementById("login-form");
  if (login) {
    login.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const err = document.getElementById("login-error");
      err.hidden = true;
      const username = document.getElementById("login-username").value.trim();
      const body = { password: document.getElementById("login-password").value };
      if (username) body.username = username;
      try {
        await post("/api/login", body);
        location.href = "/";
      } catch (e) {
        showError(err, e);
      }
    });
  }
  const invite = document.getElementById("invite-form");
  if (invite) {
    invite.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const err = document.getElementById("invite-error");
      err.hidden = true;
      try {
        await post("/api/invites/accept", { token: boot.inviteToken,
          username: document.getElementById("invite-username").value.trim(),
          password: document.getElementById("invite-password").value,
          displayName: document.getElementById("invite-display-name").value.trim() });
        location.href = "/";
      } catch (e) {
        showError(err, e);
      }
    });
  }
  document.body.dataset.ready = "login";
}

start();
