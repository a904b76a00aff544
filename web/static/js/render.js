// Message rendering: Markdown (marked) with tables, highlighted code with a copy
// button, KaTeX math and Mermaid diagrams. Every piece of HTML goes through
// DOMPurify before it touches the page; names and file names use textContent.
/* global marked, DOMPurify, hljs, katex */

const PURIFY = {
  USE_PROFILES: { html: true, mathMl: true },
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
  FORBID_ATTR: ["srcset"],
};

// Links open in a new tab without access to this window; only http(s), mailto and
// same-origin paths survive.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!/^(https?:|mailto:|\/(?!\/)|#)/i.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
  if (node.tagName === "IMG") {
    const src = node.getAttribute("src") || "";
    if (!/^(\/(?!\/)|data:image\/(png|gif|jpeg|webp);)/i.test(src)) node.removeAttribute("src");
    node.setAttribute("loading", "lazy");
  }
});

export function sanitize(html) {
  return DOMPurify.sanitize(html, PURIFY);
}

const MATH_BLOCK = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]/g;
const MATH_INLINE = /(^|[^\\$])\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)|\\\(([^\n]+?)\\\)/g;

function renderMath(tex, display) {
  try {
    return katex.renderToString(tex, { displayMode: display, throwOnError: false, trust: false, strict: "ignore",
      output: "htmlAndMathml" });
  } catch (e) {
    return `<code>${escapeHtml(tex)}</code>`;
  }
}

export function isDark() {
  const th = document.documentElement.dataset.theme;
  return th === "dark" || (th !== "light" && window.matchMedia("(prefers-color-scheme: dark)").matches);
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// Math is cut out before Markdown sees it (so `_` and `*` inside formulas stay),
// replaced by placeholders, and put back as KaTeX HTML afterwards. Code spans and
// fences are left alone.
function protectMath(src, store) {
  const parts = src.split(/(```[\s\S]*?(?:```|$)|`[^`\n]*`)/g);
  return parts.map((part, i) => {
    if (i % 2 === 1) return part;
    part = part.replace(MATH_BLOCK, (m, a, b) => {
      store.push(renderMath(a || b, true));
      return `\u0000M${store.length - 1}\u0000`;
    });
    return part.replace(MATH_INLINE, (m, pre, a, b) => {
      store.push(renderMath(a || b, false));
      return `${pre || ""}\u0000M${store.length - 1}\u0000`;
    });
  }).join("");
}

const renderer = {
  code(token) {
    const text = token.text || "";
    const lang = (token.lang || "").trim().split(/\s+/)[0].toLowerCase();
    if (lang === "mermaid") {
      return `<div class="mermaid-block" data-state="pending"><pre class="mermaid-src">${escapeHtml(text)}</pre></div>`;
    }
    let body;
    try {
      body = lang && hljs.getLanguage(lang) ? hljs.highlight(text, { language: lang, ignoreIllegals: true }).value
        : hljs.highlightAuto(text).value;
    } catch (e) {
      body = escapeHtml(text);
    }
    const label = escapeHtml(lang || "text");
    return `<div class="code-block"><div class="code-head"><span class="code-lang">${label}</span></div>` +
      `<pre><code class="hljs language-${label}">${body}</code></pre></div>`;
  },
};

marked.use({ gfm: true, breaks: true, renderer });

export function markdownToHtml(src) {
  const store = [];
  let html = marked.parse(protectMath(String(src || ""), store));
  html = html.replace(/\u0000M(\d+)\u0000/g, (m, i) => store[Number(i)] || "");
  return sanitize(html);
}

// Render Markdown into an element, then add copy buttons and start diagrams.
export function renderInto(el, src, t) {
  el.innerHTML = markdownToHtml(src);
  el.querySelectorAll(".code-block").forEach((block) => {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "copy-btn";
    btn.textContent = t("code.copy");
    btn.addEventListener("click", () => copyText(block.querySelector("code").textContent, btn, t));
    block.querySelector(".code-head").appendChild(btn);
  });
  const diagrams = el.querySelectorAll(".mermaid-block[data-state=pending]");
  if (diagrams.length) renderMermaid(diagrams);
}

// Copy text and say so on the button for a moment (keys: its "copied" and "copy" labels).
export async function copyText(text, btn, t, [done, idle] = ["code.copied", "code.copy"]) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    const ta = document.createElement("textarea");
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    document.execCommand("copy");
    ta.remove();
  }
  btn.textContent = t(done);
  btn.classList.add("done");
  setTimeout(() => { btn.textContent = t(idle); btn.classList.remove("done"); }, 1500);
}

// Mermaid is large (~3.5 MB): loaded from our own server the first time a diagram shows up.
let mermaidReady = null;
let diagramCount = 0;

function loadMermaid() {
  if (!mermaidReady) {
    mermaidReady = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = "/static/vendor/mermaid/mermaid.min.js";
      s.onload = () => {
        const dark = isDark();
        window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: dark ? "dark" : "default",
          htmlLabels: false, flowchart: { htmlLabels: false }, fontFamily: "inherit" });
        resolve(window.mermaid);
      };
      s.onerror = () => reject(new Error("mermaid failed to load"));
      document.head.appendChild(s);
    });
  }
  return mermaidReady;
}

async function renderMermaid(blocks) {
  let mermaid;
  try {
    mermaid = await loadMermaid();
  } catch (e) {
    blocks.forEach((b) => { b.dataset.state = "error"; });
    return;
  }
  for (const block of blocks) {
    if (block.dataset.state !== "pending") continue;
    block.dataset.state = "rendering";
    const src = block.querySelector(".mermaid-src").textContent;
    try {
      const { svg } = await mermaid.render(`xj-mermaid-${++diagramCount}`, src);
      const clean = DOMPurify.sanitize(svg, { USE_PROFILES: { svg: true, svgFilters: true, html: true },
        ADD_TAGS: ["foreignObject", "style"], FORBID_TAGS: ["script"] });
      const holder = document.createElement("div");
      holder.className = "mermaid-svg";
      holder.innerHTML = clean;
      block.appendChild(holder);
      block.dataset.state = "done";
    } catch (e) {
      block.dataset.state = "error";
      const err = document.createElement("div");
      err.className = "error";
      err.textContent = String((e && e.message) || e).slice(0, 300);
      block.appendChild(err);
      document.querySelectorAll(`#dxj-mermaid-${diagramCount}`).forEach((n) => n.remove());
    }
  }
}
