"""Web tools: ``web_search`` (pluggable backends: SearXNG's JSON API, DuckDuckGo's keyless HTML page)
and ``web_fetch`` (the readable text of a page, extracted with trafilatura).

Both only reach public hosts: a URL whose host resolves to a loopback, private, link-local or
metadata address is refused unless the host is listed in ``XIAJIAO_WEB_ALLOWED_HOSTS``, and a
redirect is followed only when its target passes the same check. Sizes and times are bounded.
"""
from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin

from xiajiao import BadRequest, SearchBackend, Setting, Tool, check_public_url, hookimpl, parse_allowed_hosts

TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown", "application/json",
              "application/xml", "text/xml")
MAX_REDIRECTS = 5
USER_AGENT = "Xiajiao web tools (+https://github.com/)"


@hookimpl
def register_settings(register):
    register(Setting("web_search_backend", "", "Backend of web_search: searxng or duckduckgo (empty: searxng when "
                     "its URL is set, else duckduckgo)."))
    register(Setting("searxng_url", "", "Base URL of a SearXNG instance for web_search (its JSON API must be on)."))
    register(Setting("duckduckgo_url", "https://html.duckduckgo.com/html/", "Address of DuckDuckGo's HTML results "
                     "page used by the keyless web_search backend."))
    register(Setting("web_allowed_hosts", "", "Comma-separated hosts (or host:port) the web tools may reach even "
                     "though they resolve to loopback or private addresses."))
    register(Setting("web_fetch_max_bytes", 2_000_000, "Largest page web_fetch downloads, in bytes.", int))
    register(Setting("web_fetch_max_chars", 20_000, "Characters of a page's text web_fetch returns.", int))
    register(Setting("web_timeout", 15.0, "Seconds a web_search or web_fetch request may take.", float))


def _allowed(app: Any) -> set[str]:
    return parse_allowed_hosts(app.settings.web_allowed_hosts)


async def fetch(app: Any, url: str, *, method: str = "GET", data: dict | None = None,
                accept: str = "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5") -> tuple[str, str, bytes]:
    """Download ``url`` (following checked redirects); returns (final url, content type, body)."""
    import httpx  # loaded once serving (xiajiao.server.warm_up), not at start
    s = app.settings
    limit = s.web_fetch_max_bytes
    async with asyncio.timeout(s.web_timeout):
        async with httpx.AsyncClient(follow_redirects=False, timeout=s.web_timeout,
                                     headers={"User-Agent": USER_AGENT, "Accept": accept}) as client:
            for _ in range(MAX_REDIRECTS + 1):
                await check_public_url(url, _allowed(app), kind="url", setting="XIAJIAO_WEB_ALLOWED_HOSTS")
                async with client.stream(method, url, data=data) as resp:
                    if resp.is_redirect and resp.headers.get("location"):
                        url, method, data = urljoin(url, resp.headers["location"]), "GET", None
                        continue
                    if resp.status_code >= 400:
                        raise BadRequest(f"The page answered HTTP {resp.status_code}", "http_error")
                    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                    if ctype and not ctype.startswith(TEXT_TYPES):
                        raise BadRequest(f"Not a text page ({ctype})", "unsupported_content_type")
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body.extend(chunk)
                        if len(body) > limit:
                            raise BadRequest(f"The page is larger than {limit} bytes", "too_large")
                    return str(resp.url), ctype, bytes(body)
    raise BadRequest(f"More than {MAX_REDIRECTS} redirects", "too_many_redirects")


def readable(body: bytes, ctype: str, url: str) -> tuple[str, str]:
    """(title, main text) of a page; plain text types pass through."""
    if ctype and not ctype.startswith(("text/html", "application/xhtml+xml")):
        return "", body.decode("utf-8", "replace")
    import trafilatura

    html = body.decode("utf-8", "replace")
    text = trafilatura.extract(html, url=url, include_comments=False, include_tables=True, favor_recall=True) or ""
    meta = trafilatura.extract_metadata(html, default_url=url)
    return (getattr(meta, "title", None) or ""), text


async def web_fetch(args: dict, ctx) -> dict:
    import httpx  # loaded once serving (xiajiao.server.warm_up), not at start

    url = str(args.get("url") or "").strip()
    if not url:
        raise BadRequest("'url' is required", "missing_url")
    try:
        final, ctype, body = await fetch(ctx.app, url)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise BadRequest(f"Could not fetch the page: {type(exc).__name__}", "fetch_failed") from None
    title, text = await asyncio.to_thread(readable, body, ctype, final)
    cap = ctx.app.settings.web_fetch_max_chars
    return {"url": final, "title": title, "text": text[:cap], "truncated": len(text) > cap}


# ------------------------------------------------------------------ search backends


async def searxng(app: Any, query: str, count: int) -> list[dict]:
    base = app.settings.searxng_url.rstrip("/")
    if not base:
        raise BadRequest("No SearXNG URL is configured (XIAJIAO_SEARXNG_URL)", "search_not_configured")
    from urllib.parse import urlencode

    _url, _ctype, body = await fetch(app, f"{base}/search?{urlencode({'q': query, 'format': 'json'})}",
                                     accept="application/json")
    import json

    try:
        data = json.loads(body)
    except ValueError:
        raise BadRequest("SearXNG did not answer JSON (is format=json enabled?)", "search_failed") from None
    return [{"title": r.get("title", ""), "url": r.get("url", ""), "snippet": r.get("content", "")}
            for r in (data.get("results") or [])[:count] if isinstance(r, dict) and r.get("url")]


def _ddg_results(body: bytes, count: int) -> list[dict]:
    from urllib.parse import parse_qs, urlsplit

    import lxml.html

    def has(cls: str) -> str:
        return f'contains(concat(" ", normalize-space(@class), " "), " {cls} ")'

    doc = lxml.html.fromstring(body.decode("utf-8", "replace") or "<html/>")
    out = []
    for result in doc.xpath(f"//div[{has('result')}]"):
        links = result.xpath(f".//a[{has('result__a')}]")
        if not links:
            continue
        href = links[0].get("href", "")
        if "uddg=" in href:  # DuckDuckGo wraps the target in a redirect link
            href = parse_qs(urlsplit(href).query).get("uddg", [href])[0]
        snippet = result.xpath(f".//*[{has('result__snippet')}]")
        out.append({"title": links[0].text_content().strip(), "url": href,
                    "snippet": snippet[0].text_content().strip() if snippet else ""})
        if len(out) >= count:
            break
    return out


async def duckduckgo(app: Any, query: str, count: int) -> list[dict]:
    _url, _ctype, body = await fetch(app, app.settings.duckduckgo_url, method="POST", data={"q": query})
    return await asyncio.to_thread(_ddg_results, body, count)


@hookimpl
def register_search_backends(register):
    register(SearchBackend("searxng", "SearXNG's JSON API (XIAJIAO_SEARXNG_URL)", searxng))
    register(SearchBackend("duckduckgo", "DuckDuckGo's keyless HTML results page", duckduckgo))


def pick_backend(app: Any) -> SearchBackend:
    name = app.settings.web_search_backend or ("searxng" if app.settings.searxng_url else "duckduckgo")
    backend = app.registries["search_backends"].get(name)
    if backend is None:
        raise BadRequest(f"Unknown web_search backend {name!r}", "search_not_configured")
    return backend


async def web_search(args: dict, ctx) -> dict:
    import httpx  # loaded once serving (xiajiao.server.warm_up), not at start

    query = str(args.get("query") or "").strip()
    if not query:
        raise BadRequest("'query' is required", "missing_query")
    count = max(1, min(int(args.get("count") or 5), 10))
    backend = pick_backend(ctx.app)
    try:
        results = await backend.search(ctx.app, query[:400], count)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise BadRequest(f"The search failed: {type(exc).__name__}", "search_failed") from None
    return {"query": query, "backend": backend.name, "results": results}


@hookimpl
def register_tools(register):
    register(Tool(
        name="web_search",
        description="Search the web; returns titles, URLs and snippets. Use web_fetch to read a result.",
        parameters={"type": "object", "properties": {
            "query": {"type": "string", "description": "What to search for, in any language"},
            "count": {"type": "integer", "minimum": 1, "maximum": 10}}, "required": ["query"]},
        fn=web_search, min_role="member"))
    register(Tool(
        name="web_fetch",
        description="Read a web page: its title and main text (no menus or ads), cut to a few thousand words.",
        parameters={"type": "object", "properties": {
            "url": {"type": "string", "description": "An http(s) URL"}}, "required": ["url"]},
        fn=web_fetch, min_role="member"))
