"""The web UI's server side: pages, the Content-Security-Policy, the PWA files, the
translations, the vendored libraries and the prepare_jinja_env hook."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import OWNER_PASSWORD, login, running_app
from xiajiao import hookimpl
from xiajiao.api.web import csp, load_strings

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"

CSP_LOCAL = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
             "font-src 'self' data:; connect-src 'self' ws://localhost wss://localhost; worker-src 'self'; "
             "manifest-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def test_csp_is_strict():
    assert csp("localhost") == CSP_LOCAL
    policy = csp("example.org:8443")
    assert "connect-src 'self' ws://example.org:8443 wss://example.org:8443" in policy
    script = next(p for p in policy.split("; ") if p.startswith("script-src"))
    assert script == "script-src 'self'"  # no 'unsafe-inline', no 'unsafe-eval'


@pytest.mark.parametrize("path,status", [("/login", 200), ("/offline.html", 200), ("/invite/abc123", 404)])
async def test_anonymous_pages_carry_the_csp(client, path, status):
    resp = await client.get(path, headers={"Host": "localhost"})
    assert resp.status_code == status  # an unknown invite: a page that says so
    assert resp.mimetype == "text/html"
    assert resp.headers["Content-Security-Policy"] == CSP_LOCAL
    assert resp.headers["X-Frame-Options"] == "DENY"
    html = await resp.get_data(as_text=True)
    # no inline script: every <script> either has a src or is a JSON data block
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html)  # no inline event handlers


async def test_root_redirects_to_login_without_a_session(client):
    resp = await client.get("/")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/login"


async def test_shell_for_a_logged_in_user_and_login_redirects_back(app):
    c = app.test_client()
    await login(c)
    resp = await c.get("/", headers={"Host": "localhost"})
    assert resp.status_code == 200
    assert resp.headers["Content-Security-Policy"] == CSP_LOCAL
    html = await resp.get_data(as_text=True)
    boot = json.loads(re.search(r'<script type="application/json" id="boot">(.*?)</script>', html, re.S).group(1))
    me = (await (await c.get("/api/me")).get_json())["user"]
    assert boot["user"] == {"id": me["id"], "role": "owner"}
    for src in ("/static/vendor/dompurify/purify.min.js", "/static/vendor/marked/marked.umd.js",
                "/static/vendor/highlight/highlight.min.js", "/static/vendor/katex/katex.min.js",
                "/static/js/app.js"):
        assert f'src="{src}"' in html
    assert (await c.get("/login")).status_code == 302


async def test_first_run_hint_until_the_owner_has_logged_in(app):
    c = app.test_client()
    html = await (await c.get("/login")).get_data(as_text=True)
    assert 'id="first-run-hint"' in html
    assert "XIAJIAO_OWNER_PASSWORD" in html
    await login(c)
    other = app.test_client()
    html = await (await other.get("/login")).get_data(as_text=True)
    assert 'id="first-run-hint"' not in html


@pytest.mark.parametrize("cookie,accept,expected_lang,expected_text", [
    ("", "en-US,en;q=0.9", "en", "Log in"),
    ("", "zh-CN,zh;q=0.9", "zh-CN", "登录"),
    ("lang=en", "zh-CN", "en", "Log in"),
    ("lang=zh", "en", "zh-CN", "登录"),
    ("lang=xx", "", "zh-CN", "登录"),
])
async def test_login_page_language(client, cookie, accept, expected_lang, expected_text):
    headers = {"Accept-Language": accept}
    if cookie:
        headers["Cookie"] = cookie
    html = await (await client.get("/login", headers=headers)).get_data(as_text=True)
    assert f'<html lang="{expected_lang}"' in html
    assert f'<button type="submit" class="primary" id="login-submit">{expected_text}</button>' in html


async def test_manifest(client):
    resp = await client.get("/manifest.webmanifest")
    assert resp.status_code == 200
    assert resp.mimetype == "application/manifest+json"
    body = json.loads(await resp.get_data(as_text=True))
    assert body["start_url"] == "/" and body["scope"] == "/" and body["display"] == "standalone"
    assert body["name"] == "Xiajiao 虾饺"
    for icon in body["icons"]:
        assert (await client.get(icon["src"])).status_code == 200, icon["src"]


async def test_service_worker_is_served_from_the_root_scope(app, client):
    resp = await client.get("/sw.js")
    assert resp.status_code == 200
    assert resp.mimetype == "text/javascript"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["Service-Worker-Allowed"] == "/"
    text = await resp.get_data(as_text=True)
    assert f'const VERSION = "xiajiao-{app.xj.version}-1";' in text
    # every file it precaches exists
    for path in re.findall(r'"(/[^"]+)"', text.split("const SHELL = [")[1].split("];")[0]):
        assert (await client.get(path)).status_code == 200, path


def _js_keys() -> set[str]:
    keys = set()
    for f in list((WEB / "static" / "js").glob("*.js")) + list((WEB / "templates").glob("*.html")):
        text = f.read_text(encoding="utf-8")
        keys |= set(re.findall(r'\bt\("([a-zA-Z]+\.[a-zA-Z.]+)"', text))
        keys |= set(re.findall(r"t\((?:lang|l), '([a-zA-Z.]+)'\)", text))
        keys |= set(re.findall(r'data-i18n(?:-placeholder|-title)?="([a-zA-Z.]+)"', text))
    return keys


def test_translations_have_the_same_keys_and_cover_the_ui():
    strings = load_strings()
    assert set(strings) == {"zh", "en"}
    assert set(strings["zh"]) == set(strings["en"])
    used = _js_keys()
    assert len(used) > 100
    assert used - set(strings["en"]) == set()
    for lang, table in strings.items():
        assert all(isinstance(v, str) and v for v in table.values()), lang
    assert strings["zh"]["login.submit"] == "登录" and strings["en"]["login.submit"] == "Log in"


@pytest.mark.parametrize("lib,files", [
    ("marked", ["marked.umd.js", "LICENSE"]),
    ("dompurify", ["purify.min.js", "LICENSE"]),
    ("highlight", ["highlight.min.js", "github.min.css", "github-dark.min.css", "LICENSE"]),
    ("katex", ["katex.min.js", "katex.min.css", "fonts/KaTeX_Main-Regular.woff2", "LICENSE"]),
    ("mermaid", ["mermaid.min.js", "LICENSE"]),
])
async def test_vendored_libraries_are_served_locally(client, lib, files):
    readme = (WEB / "static" / "vendor" / "README.md").read_text(encoding="utf-8")
    for name in files:
        assert (WEB / "static" / "vendor" / lib / name).is_file(), f"{lib}/{name}"
        if not name.startswith("LICENSE"):
            resp = await client.get(f"/static/vendor/{lib}/{name}")
            assert resp.status_code == 200
    assert f"`{lib}/" in readme or f"| {lib} |" in readme


def test_every_katex_font_the_css_names_first_is_vendored():
    css = (WEB / "static" / "vendor" / "katex" / "katex.min.css").read_text(encoding="utf-8")
    fonts = set(re.findall(r"url\(fonts/([^)]+\.woff2)\)", css))
    assert len(fonts) >= 19
    for f in fonts:
        assert (WEB / "static" / "vendor" / "katex" / "fonts" / f).is_file(), f


class JinjaPlugin:
    @hookimpl
    def prepare_jinja_env(self, env):
        env.filters["shout"] = lambda s: str(s).upper() + "!"
        env.globals["plugin_banner"] = "from a plugin"


def prepare_jinja_env(env):  # the hook's name as a test function marker (tests/test_hookspecs.py)
    JinjaPlugin().prepare_jinja_env(env)


async def test_prepare_jinja_env_hook_changes_the_ui_environment(settings):
    async with running_app(settings, plugins=[JinjaPlugin()]) as app:
        env = app.jinja_env
        assert await env.from_string("{{ 'xiajiao' | shout }} {{ plugin_banner }}").render_async() == "XIAJIAO! from a plugin"
        assert env.globals["t"]("en", "login.submit") == "Log in"
        c = app.test_client()
        assert (await c.get("/login")).status_code == 200


async def test_a_failing_jinja_plugin_does_not_break_the_pages(settings):
    class Broken:
        @hookimpl
        def prepare_jinja_env(self, env):
            raise RuntimeError("broken plugin")

    async with running_app(settings, plugins=[Broken()]) as app:
        resp = await app.test_client().get("/login")
        assert resp.status_code == 200


async def test_login_form_posts_to_the_seed_endpoint(client):
    html = await (await client.get("/login")).get_data(as_text=True)
    assert 'id="login-password"' in html and 'type="password"' in html
    js = (WEB / "static" / "js" / "login.js").read_text(encoding="utf-8")
    assert 'post("/api/login", body)' in js
    resp = await client.post("/api/login", json={"password": OWNER_PASSWORD})
    assert resp.status_code == 200


def _js_imports() -> dict[str, set[str]]:
    """Each module of the web app and the local modules it imports."""
    graph = {}
    for f in (WEB / "static" / "js").glob("*.js"):
        text = f.read_text(encoding="utf-8")
        graph[f.name] = set(re.findall(r'^import\s[^;]*?from\s+"\./([\w.-]+\.js)";', text, re.M | re.S))
        graph[f.name] |= set(re.findall(r'^import\s+"\./([\w.-]+\.js)";', text, re.M))
    return graph


def test_the_web_app_modules_import_each_other_without_cycles():
    graph = _js_imports()
    assert graph["app.js"] >= {"state.js", "sidebar.js", "chat.js", "composer.js", "settings.js"}
    assert not [name for name, deps in graph.items() if "app.js" in deps]  # the entry point is imported by none

    def walk(name, path):
        for dep in graph.get(name, ()):
            assert dep in graph, f"{name} imports a missing {dep}"
            assert dep not in path, " -> ".join([*path, dep])
            walk(dep, [*path, dep])

    for name in graph:
        walk(name, [name])
