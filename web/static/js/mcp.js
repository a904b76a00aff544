// Settings › MCP servers (admins; stdio servers: the owner): add a server, see its status and tools,
// mark tools as needing approval, restart or remove it. Agents get the tools in their tool list.
import { del, get, post, put } from "./api.js";
import { clear, h, toast } from "./dom.js";
import { t } from "./i18n.js";
import { S, report } from "./state.js";
import { busy, field } from "./ui.js";

const STATES = ["stopped", "starting", "ready", "unhealthy", "disabled"];

// "KEY=value" (or "Name: value") lines -> an object
function parsePairs(text, sep) {
  const out = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf(sep);
    if (at > 0) out[line.slice(0, at).trim()] = line.slice(at + sep.length).trim();
  }
  return out;
}

function toolRow(server, tool, reload) {
  const approval = h("input", { type: "checkbox", class: "tool-approval", checked: !!tool.approval,
    disabled: (server.approval || []).includes("*") || !!tool.skipped });
  approval.addEventListener("change", async () => {
    const names = new Set((server.approval || []).filter((x) => x !== "*"));
    if (approval.checked) names.add(tool.name); else names.delete(tool.name);
    try {
      await put(`/api/mcp/servers/${encodeURIComponent(server.id)}`, { approval: [...names] });
      toast(t("common.saved"));
      await reload();
    } catch (e) { report(e); }
  });
  return h("li", { class: `mcp-tool${tool.skipped ? " skipped" : ""}`, dataset: { tool: tool.name } },
    h("div", { class: "grow" },
      h("code", { text: tool.exposedName || tool.name }),
      h("div", { class: "muted small", text: tool.description || "" }),
      tool.skipped ? h("div", { class: "error small skipped-reason", text: `${t("mcp.skipped")}: ${tool.skipped}` }) : null),
    h("label", { class: "mcp-approval small" }, approval, t("mcp.approval")));
}

function serverCard(s, reload) {
  const state = STATES.includes(s.status) ? s.status : "stopped";
  const canChange = s.transport !== "stdio" || S.me.role === "owner";
  const refresh = h("button", { type: "button", class: "link-btn act-refresh", text: t("mcp.refresh"), disabled: !s.enabled });
  refresh.addEventListener("click", busy(refresh, async () => {
    await post(`/api/mcp/servers/${encodeURIComponent(s.id)}/refresh`, { restart: state === "ready" });
    await reload();
  }));
  const toggle = h("button", { type: "button", class: "link-btn act-toggle", text: t(s.enabled ? "mcp.disable" : "mcp.enable"),
    disabled: !canChange });
  toggle.addEventListener("click", busy(toggle, async () => {
    await put(`/api/mcp/servers/${encodeURIComponent(s.id)}`, { enabled: !s.enabled });
    await reload();
  }));
  const remove = h("button", { type: "button", class: "link-btn danger-text act-delete", text: t("message.delete"), disabled: !canChange,
    onclick: async () => {
      if (!window.confirm(t("mcp.confirmDelete", { name: s.name }))) return;
      try { await del(`/api/mcp/servers/${encodeURIComponent(s.id)}`); await reload(); } catch (e) { report(e); }
    } });
  const target = s.transport === "stdio" ? [s.command, ...(s.args || [])].join(" ") : s.url;
  const usable = (s.tools || []).filter((x) => x.exposedName).length;
  return h("div", { class: "provider mcp-server", dataset: { id: s.id, status: state } },
    h("div", { class: "mcp-head" },
      h("div", { class: "grow" }, h("strong", { text: s.name }), " ", h("span", { class: "pill", text: s.transport }), " ",
        h("span", { class: `pill mcp-status ${state === "unhealthy" ? "error" : state}`, text: t(`mcp.state.${state}`) })),
      h("div", { class: "mcp-actions" }, refresh, toggle, remove)),
    h("div", { class: "muted small mcp-target", text: target }),
    s.lastError ? h("div", { class: "error small mcp-error", text: s.lastError }) : null,
    h("details", { class: "mcp-tools" }, h("summary", { text: t("mcp.tools", { n: usable }) }),
      (s.tools || []).length ? h("ul", { class: "plain" }, s.tools.map((x) => toolRow(s, x, reload)))
        : h("p", { class: "muted small", text: t("mcp.noTools") })));
}

export async function mcpPane() {
  const wrap = h("div", { class: "mcp" });
  const listEl = h("div", { class: "provider-list", id: "mcp-servers" });
  const reload = async () => {
    const r = await get("/api/mcp/servers");
    // a redraw keeps the tool lists a person opened
    const open = new Set([...listEl.querySelectorAll(".mcp-server")].filter((el) => el.querySelector(".mcp-tools")?.open)
      .map((el) => el.dataset.id));
    clear(listEl);
    for (const s of r.servers || []) {
      const card = serverCard(s, reload);
      if (open.has(s.id)) card.querySelector(".mcp-tools").open = true;
      listEl.appendChild(card);
    }
    if (!(r.servers || []).length) listEl.appendChild(h("p", { class: "muted", id: "no-mcp-servers", text: t("mcp.none") }));
    return r.servers || [];
  };
  await reload();
  wrap.appendChild(h("section", {}, h("h4", { text: t("mcp.title") }), h("p", { class: "muted small", text: t("mcp.intro") }), listEl));

  const id = h("input", { id: "mcp-id", required: true, pattern: "[a-z][a-z0-9_]{0,23}", placeholder: "files" });
  const name = h("input", { id: "mcp-name", maxlength: "100" });
  const transport = h("select", { id: "mcp-transport" },
    h("option", { value: "stdio", text: t("mcp.stdio"), disabled: S.me.role !== "owner" }),
    h("option", { value: "http", text: t("mcp.http") }));
  if (S.me.role !== "owner") transport.value = "http";
  const command = h("input", { id: "mcp-command", placeholder: "npx" });
  const args = h("input", { id: "mcp-args", placeholder: "-y @modelcontextprotocol/server-filesystem /srv/files" });
  const env = h("textarea", { id: "mcp-env", rows: "2", placeholder: "API_KEY=…" });
  const url = h("input", { id: "mcp-url", placeholder: "https://mcp.example.com/mcp" });
  const headers = h("textarea", { id: "mcp-headers", rows: "2", placeholder: "Authorization: Bearer …" });
  const error = h("p", { class: "error", id: "mcp-form-error", hidden: true });
  const stdioPart = h("div", {}, field(t("mcp.command"), command), field(t("mcp.args"), args, t("mcp.argsHint")),
    field(t("mcp.env"), env, t("mcp.secretHint")));
  const httpPart = h("div", {}, field(t("mcp.url"), url), field(t("mcp.headers"), headers, t("mcp.secretHint")));
  const sync = () => { stdioPart.hidden = transport.value !== "stdio"; httpPart.hidden = transport.value !== "http"; };
  transport.addEventListener("change", sync);
  sync();
  const add = h("button", { type: "submit", class: "primary", id: "mcp-add", text: t("mcp.add") });
  const form = h("form", { class: "form", id: "mcp-form" },
    h("div", { class: "grid2" }, field(t("mcp.id"), id, t("mcp.idHint")), field(t("mcp.name"), name)),
    field(t("mcp.transport"), transport), stdioPart, httpPart, error, add);
  form.addEventListener("submit", busy(add, async () => {
    error.hidden = true;
    const body = { id: id.value.trim(), name: name.value.trim() || undefined, transport: transport.value };
    if (transport.value === "stdio") {
      Object.assign(body, { command: command.value.trim(), args: args.value.trim() ? args.value.trim().split(/\s+/) : [],
        env: parsePairs(env.value, "=") });
    } else {
      Object.assign(body, { url: url.value.trim(), headers: parsePairs(headers.value, ":") });
    }
    try {
      await post("/api/mcp/servers", body);
    } catch (e) {
      error.textContent = e.message || String(e);
      error.hidden = false;
      return;
    }
    toast(t("mcp.added"));
    form.reset();
    sync();
    await reload();
    // it starts and lists its tools in the background: look again shortly
    setTimeout(() => { if (listEl.isConnected) reload().catch(() => {}); }, 1500);
  }));
  wrap.appendChild(h("section", {}, h("h4", { text: t("mcp.add") }), form));
  return wrap;
}
