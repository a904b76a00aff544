// Service worker: the app shell and vendored libraries come from the cache when the
// network is away; a page that cannot load shows /offline.html. API calls and the
// WebSocket always go to the network.
const VERSION = "xiajiao-__VERSION__-1";
const SHELL = [
  "/offline.html",
  "/static/css/app.css",
  "/static/js/theme.js",
  "/static/js/app.js",
  "/static/js/api.js",
  "/static/js/dom.js",
  "/static/js/i18n.js",
  "/static/js/state.js",
  "/static/js/ui.js",
  "/static/js/sidebar.js",
  "/static/js/messages.js",
  "/static/js/citations.js",
  "/static/js/chat.js",
  "/static/js/composer.js",
  "/static/js/search.js",
  "/static/js/collab.js",
  "/static/js/workflows.js",
  "/static/js/groups.js",
  "/static/js/memory.js",
  "/static/js/knowledge.js",
  "/static/js/agents.js",
  "/static/js/settings.js",
  "/static/js/account.js",
  "/static/js/home.js",
  "/static/js/render.js",
  "/static/js/ws.js",
  "/static/js/login.js",
  "/static/i18n/zh.json",
  "/static/i18n/en.json",
  "/static/icons/icon.svg",
  "/static/vendor/dompurify/purify.min.js",
  "/static/vendor/marked/marked.umd.js",
  "/static/vendor/highlight/highlight.min.js",
  "/static/vendor/highlight/github.min.css",
  "/static/vendor/highlight/github-dark.min.css",
  "/static/vendor/katex/katex.min.js",
  "/static/vendor/katex/katex.min.css",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(VERSION).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== VERSION).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/api/") || url.pathname === "/ws" || url.pathname.startsWith("/uploads/")) return;
  if (req.mode === "navigate") {
    event.respondWith(fetch(req).catch(() => caches.match("/offline.html")));
    return;
  }
  if (url.pathname.startsWith("/static/")) {
    // network first (fresh code after an upgrade), the cache when offline
    event.respondWith(fetch(req).then((resp) => {
      if (resp.ok) {
        const copy = resp.clone();
        caches.open(VERSION).then((c) => c.put(req, copy));
      }
      return resp;
    }).catch(() => caches.match(req)));
  }
});
