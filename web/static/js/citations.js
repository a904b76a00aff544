// Citation markers of an agent's reply ([1], [2] …) as links to the passages they cite: the side
// panel shows the document around the passage, the cited one highlighted and scrolled into view.
import { get } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";
import { S, report } from "./state.js";
import { openPanel } from "./ui.js";

const MARK = /\[(\d{1,2})\]/;
const MARKS = /\[(\d{1,2})\]/g;
const SKIP = new Set(["CODE", "PRE", "A", "KBD", "SCRIPT", "STYLE"]);

function skipped(node, root) {
  for (let p = node.parentNode; p && p !== root; p = p.parentNode) {
    if (SKIP.has(p.tagName) || (p.classList && (p.classList.contains("katex") || p.classList.contains("mermaid-block")))) {
      return true;
    }
  }
  return false;
}

// Turn the markers in a rendered reply into links (code, links and formulas are left alone).
export function linkCitations(root, m) {
  if (!m.agentId || !m.id || m.status === "streaming") return;
  const agent = S.agents.get(m.agentId);
  if (agent && agent.knowledge === false) return;  // an agent without knowledge cites nothing of it
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const found = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (MARK.test(node.nodeValue) && !skipped(node, root)) found.push(node);
  }
  for (const node of found) {
    const text = node.nodeValue;
    const frag = document.createDocumentFragment();
    let at = 0;
    for (const hit of text.matchAll(MARKS)) {
      frag.append(text.slice(at, hit.index));
      const n = Number(hit[1]);
      frag.append(h("a", { class: "cite", href: "#", dataset: { n: String(n) }, title: t("citation.open", { n }),
        text: hit[0], onclick: (ev) => { ev.preventDefault(); openCitation(m, n); } }));
      at = hit.index + hit[0].length;
    }
    frag.append(text.slice(at));
    node.replaceWith(frag);
  }
}

// A passage's own words: the Markdown heading line it starts with is shown as its heading path.
function body(p) {
  const last = (p.heading || "").split(" › ").pop();
  const m = /^#{1,6}[ \t]+(.+?)[ \t#]*(\n|$)/.exec(p.text);
  return (m && m[1].trim() === last ? p.text.slice(m[0].length) : p.text).trim();
}

// The document at citation n of reply m, in the side panel.
export async function openCitation(m, n) {
  let found;
  try {
    found = await get(`/api/rag/citations/${encodeURIComponent(m.id)}/document?n=${n}`);
  } catch (e) {
    report(e);
    return;
  }
  const c = found.citation;
  let heading = null;
  const passages = found.passages.map((p) => {
    const head = p.heading && p.heading !== heading ? h("div", { class: "citation-heading", text: p.heading }) : null;
    heading = p.heading;
    return h("section", { class: `citation-passage${p.cited ? " cited" : ""}`, dataset: { passage: String(p.passage) } },
      head, h("div", { class: "citation-text", text: body(p) }));
  });
  const view = h("div", { class: "citation-view", dataset: { n: String(n), message: m.id } },
    h("div", { class: "citation-meta" },
      h("strong", { class: "citation-doc", text: found.document.name }),
      h("span", { class: "muted", text: t("citation.where", { p: c.passage + 1, total: found.document.passages }) })),
    ...passages);
  openPanel("citation", t("citation.title", { n }), view);
  const cited = view.querySelector(".citation-passage.cited");
  if (cited) cited.scrollIntoView({ block: "center" });
}
