"""web_search and web_fetch against loopback fixture servers: readable text, search backends,
size/type/time limits, and the public-address rule (loopback refused unless a setting allows it,
redirects followed only to allowed targets)."""
from __future__ import annotations

import asyncio
import json

import pytest

from conftest import llm_settings, login, make_settings, running_app
from fake_llm import Call, Reply
from xiajiao import Actor, SearchBackend, ToolContext, hookimpl

ARTICLE = """<!doctype html><html><head><title>虾饺的做法 · Har gow</title></head><body>
<nav><a href="/">Home</a> | <a href="/menu">Menu</a> | Login</nav>
<article><h1>How to fold har gow</h1>
<p>Har gow are shrimp dumplings with a translucent wrapper made of wheat starch and tapioca starch.
Each dumpling is pleated seven to ten times before it is steamed for six minutes.</p>
<p>虾饺的外皮用澄粉和生粉制成，蒸六分钟即可。皮要薄，褶子要多。</p></article>
<footer>Copyright 2026 · Cookie settings · Advertise with us</footer></body></html>"""

DDG = """<html><body><div class="results">
<div class="result results_links"><h2><a class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fexample.org%2Fhar-gow&rut=1">Har gow recipe</a></h2>
<a class="result__snippet">Shrimp dumplings, pleated and steamed.</a></div>
<div class="result results_links"><h2><a class="result__a" href="https://example.com/dim-sum">Dim sum guide</a></h2>
<div class="result__snippet">Everything about dim sum.</div></div>
</div></body></html>"""


class Site:
    """A tiny HTTP/1.1 server on loopback with canned pages."""

    def __init__(self):
        self.port = 0
        self.hits: list[tuple[str, str, bytes]] = []
        self.pages = {}

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{self.port}"
        self.pages = {
            "/article": (200, "text/html; charset=utf-8", ARTICLE.encode(), {}),
            "/moved": (302, "text/plain", b"", {"Location": "/article"}),
            "/away": (302, "text/plain", b"", {"Location": f"http://127.0.0.2:{self.port}/article"}),
            "/image": (200, "image/png", b"\x89PNG\r\n\x1a\n" + b"0" * 100, {}),
            "/big": (200, "text/html", b"<p>" + b"x" * 300_000 + b"</p>", {}),
            "/slow": (200, "text/html", b"<p>late</p>", {"_delay": "3"}),
            "/ddg": (200, "text/html", DDG.encode(), {}),
            "/searx/search": (200, "application/json", json.dumps({"results": [
                {"title": "SearXNG hit", "url": "https://example.net/a", "content": "A snippet."}]}).encode(), {}),
            "/loop": (302, "text/plain", b"", {"Location": "/loop"}),
        }
        self.base = base
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            length = 0
            for line in head.decode().split("\r\n")[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            self.hits.append((method, target, body))
            status, ctype, data, headers = self.pages.get(target.split("?")[0], (404, "text/plain", b"nope", {}))
            headers = dict(headers)
            if "_delay" in headers:
                await asyncio.sleep(float(headers.pop("_delay")))
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n{extra}"
                         "Connection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def site():
    async with Site() as s:
        yield s


def ctx(app):
    return ToolContext(app=app.xj, agent={"id": "butler", "name": "Butler"}, channel={"id": "c"},
                       message={"id": "m"}, actor=Actor("u", "owner"))


async def call(app, name, args):
    return await app.xj.tools.get(name).fn(args, ctx(app))


async def test_web_fetch_returns_the_readable_text_of_an_allowed_page(tmp_path, site):
    async with running_app(make_settings(tmp_path, web_allowed_hosts=f"127.0.0.1:{site.port}")) as app:
        out = await call(app, "web_fetch", {"url": site.base + "/moved"})
    assert out["url"] == site.base + "/article" and out["title"] in ("How to fold har gow", "虾饺的做法 · Har gow")
    assert "pleated seven to ten times" in out["text"] and "澄粉和生粉" in out["text"]
    assert "Cookie settings" not in out["text"] and "Login" not in out["text"]  # boilerplate is left out


async def test_loopback_is_refused_without_the_setting(tmp_path, site):
    async with running_app(make_settings(tmp_path)) as app:
        for url in (site.base + "/article", f"http://2130706433:{site.port}/article", f"http://0x7f000001:{site.port}/",
                    f"http://[::ffff:127.0.0.1]:{site.port}/", "http://169.254.169.254/latest/meta-data/"):
            with pytest.raises(Exception) as err:
                await call(app, "web_fetch", {"url": url})
            assert getattr(err.value, "code", "") == "url_forbidden", (url, err.value)
    assert site.hits == []  # nothing was sent there


@pytest.mark.parametrize("path,code", [("/away", "url_forbidden"), ("/image", "unsupported_content_type"),
                                       ("/big", "too_large"), ("/loop", "too_many_redirects"),
                                       ("/missing", "http_error")])
async def test_redirects_types_and_sizes_are_checked(tmp_path, site, path, code):
    settings = make_settings(tmp_path, web_allowed_hosts=f"127.0.0.1:{site.port}", web_fetch_max_bytes=100_000)
    async with running_app(settings) as app:
        with pytest.raises(Exception) as err:
            await call(app, "web_fetch", {"url": site.base + path})
    assert getattr(err.value, "code", "") == code


async def test_a_slow_page_times_out(tmp_path, site):
    settings = make_settings(tmp_path, web_allowed_hosts=f"127.0.0.1:{site.port}", web_timeout=0.5)
    async with running_app(settings) as app:
        with pytest.raises(Exception) as err:
            await call(app, "web_fetch", {"url": site.base + "/slow"})
    assert getattr(err.value, "code", "") == "fetch_failed"


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "http://user:pw@example.com/", "nonsense"])
async def test_bad_urls_are_refused(tmp_path, url):
    async with running_app(make_settings(tmp_path)) as app:
        with pytest.raises(Exception) as err:
            await call(app, "web_fetch", {"url": url})
    assert getattr(err.value, "code", "") == "invalid_url"


async def test_web_search_through_duckduckgo_html_and_searxng(tmp_path, site):
    settings = make_settings(tmp_path, web_allowed_hosts=f"127.0.0.1:{site.port}", duckduckgo_url=site.base + "/ddg")
    async with running_app(settings) as app:
        out = await call(app, "web_search", {"query": "虾饺 recipe"})
    assert out["backend"] == "duckduckgo"
    assert out["results"] == [
        {"title": "Har gow recipe", "url": "https://example.org/har-gow", "snippet": "Shrimp dumplings, pleated and steamed."},
        {"title": "Dim sum guide", "url": "https://example.com/dim-sum", "snippet": "Everything about dim sum."}]
    assert site.hits[-1][0] == "POST" and "q=%E8%99%BE%E9%A5%BA+recipe" in site.hits[-1][2].decode()
    settings = make_settings(tmp_path, web_allowed_hosts=f"127.0.0.1:{site.port}", searxng_url=site.base + "/searx")
    async with running_app(settings) as app:
        out = await call(app, "web_search", {"query": "dumplings", "count": 3})
    assert out["backend"] == "searxng" and out["results"][0]["title"] == "SearXNG hit"
    assert "format=json" in site.hits[-1][1]


class Library:
    """A plugin contributing its own search backend."""

    @hookimpl
    def register_search_backends(self, register):
        async def search(app, query, count):
            return [{"title": f"Catalogue: {query}", "url": "https://library.example/1", "snippet": ""}][:count]

        register(SearchBackend("library", "The library catalogue", search))


async def test_a_plugin_adds_a_search_backend(tmp_path):
    async with running_app(make_settings(tmp_path, web_search_backend="library"), plugins=[Library()]) as app:
        out = await call(app, "web_search", {"query": "dim sum"})
    assert out == {"query": "dim sum", "backend": "library",
                   "results": [{"title": "Catalogue: dim sum", "url": "https://library.example/1", "snippet": ""}]}


async def test_an_agent_reads_a_page_in_a_turn(tmp_path, fake_llm, site):
    settings = llm_settings(tmp_path, fake_llm, web_allowed_hosts=f"127.0.0.1:{site.port}")
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        await owner.put("/api/agents/butler", json={"tools": ["web_fetch"]})
        r = await owner.post("/api/channels", json={"name": "dm", "type": "dm", "agentIds": ["butler"]})
        cid = (await r.get_json())["id"]
        fake_llm.script(Reply(tool_calls=[Call("web_fetch", {"url": site.base + "/article"})]),
                        Reply(text="They are steamed for six minutes.", chunks=1))
        await owner.post("/api/messages", json={"channelId": cid, "content": "How long are har gow steamed?"})
        for _ in range(1000):
            if len(fake_llm.chat_requests()) >= 2:
                break
            await asyncio.sleep(0.01)
        tool_msgs = [m for m in fake_llm.chat_requests()[1].json["messages"] if m["role"] == "tool"]
        assert tool_msgs and "steamed for six minutes" in tool_msgs[0]["content"]
