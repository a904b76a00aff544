"""End-to-end: a real Chromium (headless, Debian's) drives the real server on loopback.

One browser per module; each test gets its own data folder and server. Tests that
need a route another part of the app provides skip, naming it, while it is absent."""
from __future__ import annotations

import os
import shutil

import pytest
import pytest_asyncio

from conftest import OWNER_PASSWORD, live_server, make_settings

# one event loop (and one browser) for the whole module
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is required for the browser tests in CI")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

XSS_HOOK = """
window.__xss = [];
document.addEventListener('securitypolicyviolation', (e) => {
  (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def site(tmp_path):
    settings = make_settings(tmp_path)
    async with live_server(settings) as (app, base):
        yield app, base


def needs(app, *rules):
    have = {r.rule for r in app.url_map.iter_rules()}
    missing = [r for r in rules if r not in have]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not on this branch yet)")


async def new_page(browser, base, lang="en"):
    ctx = await browser.new_context(locale="en-US" if lang == "en" else "zh-CN", service_workers="block")
    await ctx.add_cookies([{"name": "lang", "value": lang, "url": base}])
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: page.errors.append("dialog: " + d.message))
    await page.add_init_script(XSS_HOOK)
    return page


async def log_in(page, base, password=OWNER_PASSWORD, username=""):
    await page.goto(base + "/login")
    if username:
        await page.fill("#login-username", username)
    await page.fill("#login-password", password)
    await page.click("#login-submit")
    await page.wait_for_url(lambda url: "/login" not in url)
    await page.wait_for_selector("body[data-ready=app]")


async def no_attack_ran(page):
    assert await page.evaluate("window.__xss") == []
    assert [e for e in page.errors if "dialog" in e] == []


async def test_login_first_run_hint_wrong_password_and_logout(browser, site):
    app, base = site
    page = await new_page(browser, base)
    await page.goto(base + "/")
    assert page.url == base + "/login"
    hint = await page.text_content("#first-run-hint")
    assert "XIAJIAO_OWNER_PASSWORD" in hint
    await page.fill("#login-password", "not-the-password")
    await page.click("#login-submit")
    await page.wait_for_selector("#login-error:not([hidden])")
    assert await page.text_content("#login-error") == "Wrong password"
    await log_in(page, base)
    assert await page.text_content("#me-name") == "Owner"
    assert await page.is_visible("#btn-settings")
    await page.click("#btn-logout")
    await page.wait_for_url(base + "/login")
    resp = await page.request.get(base + "/api/me")
    assert resp.status == 401
    assert page.errors == []
    await page.context.close()


RICH = r"""
| 名字 | Role |
| --- | --- |
| 虾饺 | agent |

```python
def hello():
    return "world"
```

Inline $E = mc^2$ and display:

$$\int_0^1 x^2\,dx = \frac{1}{3}$$

```mermaid
graph TD
  A[Start] --> B{Works?}
  B -->|yes| C[Ship]
```
"""


async def test_markdown_code_math_and_mermaid_render_under_the_csp(browser, site):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    await page.evaluate("""async (src) => {
        const { renderInto } = await import('/static/js/render.js');
        const { t } = await import('/static/js/i18n.js');
        const el = document.createElement('div');
        el.id = 'probe'; el.className = 'md';
        document.body.appendChild(el);
        renderInto(el, src, t);
    }""", RICH)
    await page.wait_for_selector("#probe .mermaid-block[data-state=done] svg", timeout=20000)
    assert await page.text_content("#probe table th") == "名字"
    assert await page.locator("#probe pre code.hljs .hljs-keyword").first.text_content() == "def"
    assert await page.locator("#probe .code-block .copy-btn").text_content() == "Copy"
    assert await page.locator("#probe .katex").count() == 2
    assert await page.locator("#probe .katex-display").count() == 1
    labels = await page.locator("#probe .mermaid-svg svg").text_content()
    assert "Start" in labels and "Ship" in labels
    await page.click("#probe .copy-btn")
    await page.wait_for_selector("#probe .copy-btn.done")
    assert await page.evaluate("window.__csp || []") == []
    assert page.errors == []
    await page.context.close()


PAYLOADS = [
    "<img src=x onerror=\"window.__xss.push('img')\">",
    "<script>window.__xss.push('script')</script>",
    "[click](javascript:window.__xss.push('link'))",
    "<svg><animate onbegin=\"window.__xss.push('svg')\" attributeName=x dur=1s>",
    "<iframe srcdoc=\"<script>parent.__xss.push('iframe')</script>\"></iframe>",
    "<a href=\"data:text/html,<script>alert(1)</script>\">data</a>",
    "$\\href{javascript:window.__xss.push('katex')}{x}$",
    "```mermaid\ngraph TD\n  A[\"<img src=x onerror=window.__xss.push('mermaid')>\"] --> B\n  click A call window.__xss.push('click')\n```",
]


async def test_the_renderer_neutralises_script_payloads(browser, site):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    for i, payload in enumerate(PAYLOADS):
        await page.evaluate("""async ([src, id]) => {
            const { renderInto } = await import('/static/js/render.js');
            const { t } = await import('/static/js/i18n.js');
            const el = document.createElement('div');
            el.id = id; el.className = 'probe';
            document.body.appendChild(el);
            renderInto(el, src, t);
        }""", [payload, f"x{i}"])
    await page.wait_for_selector("#x7 .mermaid-block:not([data-state=pending]):not([data-state=rendering])", timeout=20000)
    await page.wait_for_timeout(300)
    hrefs = await page.eval_on_selector_all(".probe a", "els => els.map(a => a.getAttribute('href'))")
    assert all(h is None or not h.lower().startswith(("javascript:", "data:")) for h in hrefs)
    assert await page.locator(".probe iframe, .probe script").count() == 0
    for el in await page.query_selector_all(".probe *"):
        attrs = await el.evaluate("e => Array.from(e.attributes).map(a => a.name)")
        assert not any(a.startswith("on") for a in attrs)
    await no_attack_ran(page)
    await page.context.close()


async def test_switch_language_between_chinese_and_english(browser, site):
    app, base = site
    page = await new_page(browser, base, lang="zh")
    await page.goto(base + "/login")
    assert await page.text_content("#login-submit") == "登录"
    await page.click("a[data-lang=en]")
    await page.wait_for_function("document.querySelector('#login-submit').textContent === 'Log in'")
    await log_in(page, base)
    assert await page.text_content("#btn-settings") == "Settings"
    await page.select_option("#lang-select", "zh")
    await page.wait_for_function("document.querySelector('#btn-settings').textContent === '设置'")
    await page.wait_for_selector("body[data-ready=app]")
    assert await page.text_content("#btn-logout") == "退出"
    assert await page.get_attribute("html", "lang") == "zh-CN"
    assert page.errors == []
    await page.context.close()


async def test_a_guest_cannot_open_settings(browser, site):
    from xiajiao import auth

    app, base = site
    await auth.create_user(app.xj.db, username="visitor", password="guest-password-1", role="guest")
    page = await new_page(browser, base)
    await log_in(page, base, password="guest-password-1", username="visitor")
    for button in ("#btn-settings", "#btn-agents", "#btn-new-dm", "#btn-new-group"):
        assert not await page.is_visible(button), button
    await page.goto(base + "/#/settings")
    await page.wait_for_selector("#modal[open] #forbidden")
    assert await page.text_content("#forbidden") == "You may not open this"
    assert await page.locator("#provider-add, #default-model").count() == 0
    resp = await page.request.put(base + "/api/settings", data={"defaultModel": "x"})
    assert resp.status in (403, 404)  # 404 while the settings route is not on this branch
    await page.context.close()


async def test_offline_page_and_manifest_are_linked(browser, site):
    app, base = site
    page = await new_page(browser, base)
    await page.goto(base + "/offline.html")
    assert await page.text_content("#offline h2") == "You are offline"
    assert await page.get_attribute("link[rel=manifest]", "href") == "/manifest.webmanifest"
    await page.context.close()


# ---------------------------------------------------------------- with the chat + engine APIs

async def test_create_agent_dm_it_and_watch_the_streamed_reply(browser, site):
    app, base = site
    needs(app, "/api/agents", "/api/channels", "/api/messages", "/ws")
    page = await new_page(browser, base)
    await log_in(page, base)
    await page.click("#btn-agents")
    await page.click("#agent-new")
    await page.fill("#agent-name", "<img src=x onerror=\"window.__xss.push('agent')\">诗人")
    await page.fill("#agent-avatar", "🦐")
    await page.fill("#agent-soul", "# 诗人\n\nYou write **short** poems.")
    await page.click("#agent-soul-preview-tab")
    assert await page.text_content("#agent-soul-preview strong") == "short"
    await page.click("#agent-save")
    await page.wait_for_selector(".agent-row >> text=诗人")
    await page.keyboard.press("Escape")
    await page.click("#btn-new-dm")
    await page.click(".agent-option >> text=诗人")
    await page.wait_for_selector("#composer-input")
    name = await page.text_content("#chat-name")
    assert name == "<img src=x onerror=\"window.__xss.push('agent')\">诗人"
    await page.fill("#composer-input", "hello <img src=x onerror=\"window.__xss.push('msg')\">")
    await page.press("#composer-input", "Enter")
    await page.wait_for_selector(".msg.own .msg-body >> text=hello")
    reply = page.locator(".msg.agent").last
    await reply.wait_for(timeout=20000)
    await page.wait_for_function(
        "(() => { const m = [...document.querySelectorAll('.msg.agent')].pop();"
        " return m && !m.classList.contains('streaming') && m.querySelector('.md').textContent.trim().length > 0; })()",
        timeout=20000)
    assert await page.locator(".msg.agent .msg-name").last.text_content() == name
    await no_attack_ran(page)
    await page.context.close()


async def test_group_mention_autocomplete_and_xss_file_name(browser, site, tmp_path):
    app, base = site
    needs(app, "/api/agents", "/api/channels", "/api/messages", "/api/upload", "/ws")
    page = await new_page(browser, base)
    await log_in(page, base)
    agents = (await (await page.request.get(base + "/api/agents")).json())["agents"]
    assert len(agents) >= 2
    await page.click("#btn-new-group")
    await page.fill("#group-name", "写作工作室")
    for a in agents[:2]:
        await page.check(f"#group-members input[value='{a['id']}']")
    await page.click("#group-save")
    await page.wait_for_selector("#chat-name >> text=写作工作室")
    first = agents[0]["name"]
    await page.type("#composer-input", "@" + first[:1])
    await page.wait_for_selector("#mention-popup:not([hidden]) .mention-item")
    await page.keyboard.press("Enter")
    assert await page.input_value("#composer-input") == f"@{first} "
    await page.type("#composer-input", "写一首诗")
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f".msg.agent .msg-name >> text={first}", timeout=20000)
    evil = tmp_path / "<img src=x onerror=window.__xss.push(1)>.txt"
    evil.write_text("just text", encoding="utf-8")
    await page.set_input_files("#file-input", str(evil))
    link = page.locator(".msg.own .file-name").last
    await link.wait_for()
    assert await link.text_content() == evil.name
    await no_attack_ran(page)
    await page.context.close()


async def test_upload_a_document_to_an_agent_and_see_it_indexed(browser, site, tmp_path):
    app, base = site
    needs(app, "/api/agents", "/api/channels", "/api/rag/upload", "/api/rag/documents")
    page = await new_page(browser, base)
    await log_in(page, base)
    await page.click("#btn-new-dm")
    await page.click(".agent-option >> nth=0")
    await page.wait_for_selector("#btn-knowledge:not([hidden])")
    await page.click("#btn-knowledge")
    doc = tmp_path / "部署指南.md"
    doc.write_text("# 部署\n\n运行 python run.py 即可启动服务。\n" * 20, encoding="utf-8")
    await page.set_input_files("#knowledge-file", str(doc))
    row = page.locator(".doc", has_text="部署指南.md")
    await row.wait_for()
    await page.wait_for_function(
        "['ready','indexed','done'].includes(document.querySelector('.doc').dataset.status)", timeout=30000)
    assert "chunks" in await row.locator(".doc-chunks").text_content()
    await page.context.close()
