"""End-to-end: a real Chromium (headless, Debian's) drives the real server on loopback.

One browser per module; each test gets its own data folder, server and fake model server
(tests/fake_llm.py, configured as the environment's OpenAI-compatible provider). The page's
CSP forbids eval, so waits use locators and ``expect`` (never ``wait_for_function`` with a string)."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import expect

from conftest import OWNER_PASSWORD, live_server, llm_settings, make_settings
from fake_llm import Call, FakeLLM, Reply
from xiajiao import Tool, hookimpl

# one event loop (and one browser) for the whole module
pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

SHOTS_DIR = Path(os.environ["XIAJIAO_SHOTS"]) if os.environ.get("XIAJIAO_SHOTS") else None  # also keep screenshots there
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
async def fake():
    async with FakeLLM() as f:
        yield f


class SlowTool:
    """A tool that waits until the test lets it finish, so the card's "calling" state can be seen."""

    def __init__(self):
        self.go = asyncio.Event()
        self.calls = []

    @hookimpl
    def register_tools(self, register):
        async def lookup(args, ctx):
            self.calls.append(args)
            await self.go.wait()
            return f"found {args['topic']}"

        register(Tool("slow_lookup", "Look a topic up (slowly)", {
            "type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}, lookup, timeout=60))


@pytest_asyncio.fixture(loop_scope="module")
async def tool():
    return SlowTool()


@pytest_asyncio.fixture(loop_scope="module")
async def site(tmp_path, fake, tool):
    """The app with its models on the fake model server (env provider ``env-openai``)."""
    async with live_server(llm_settings(tmp_path, fake), plugins=[tool]) as (app, base):
        yield app, base


VIEWPORTS = [{"width": 1280, "height": 860}, {"width": 390, "height": 844}]  # a desktop and a phone


async def owner_page(browser, base, viewport):
    """A page of the signed-in owner at this screen size."""
    page = await new_page(browser, base)
    await page.set_viewport_size(viewport)
    await log_in(page, base)
    return page


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
    await expect(page.locator("#login-submit")).to_have_text("Log in")
    await log_in(page, base)
    assert await page.text_content("#btn-settings") == "Settings"
    await page.select_option("#lang-select", "zh")
    await expect(page.locator("#btn-settings")).to_have_text("设置")
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
    assert resp.status == 403
    assert (await resp.json())["code"] == "forbidden"
    await page.context.close()


async def test_offline_page_and_manifest_are_linked(browser, site):
    app, base = site
    page = await new_page(browser, base)
    await page.goto(base + "/offline.html")
    assert await page.text_content("#offline h2") == "You are offline"
    assert await page.get_attribute("link[rel=manifest]", "href") == "/manifest.webmanifest"
    await page.context.close()


# ---------------------------------------------------------------- with the chat, engine and knowledge APIs

EVIL_AGENT = "<img src=x onerror=\"window.__xss.push('agent')\">诗人"
POEM = "**Spring** rain\n\n| line | words |\n| --- | --- |\n| 1 | 春雨 |"


async def create_agent_in_editor(page, name, soul="", tools=()):
    await page.click("#btn-agents")
    await page.click("#agent-new")
    await page.fill("#agent-name", name)
    await page.fill("#agent-avatar", "🦐")
    for tool_name in tools:
        await page.check(f"#agent-tools input[value='{tool_name}']")
    if soul:
        await page.fill("#agent-soul", soul)
    await page.click("#agent-save")
    await page.locator(".agent-row", has_text=name).wait_for()
    await page.keyboard.press("Escape")


async def open_dm(page, name):
    await page.click("#btn-new-dm")
    await page.locator(".agent-option", has_text=name).click()
    await expect(page.locator("#chat-name")).to_have_text(name)


async def say(page, text):
    await page.fill("#composer-input", text)
    await page.press("#composer-input", "Enter")


async def test_create_agent_dm_it_watch_the_streamed_reply_and_stop_one(browser, site, fake):
    from fake_llm import split_text

    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    await page.click("#btn-agents")
    await page.click("#agent-new")
    await page.fill("#agent-name", EVIL_AGENT)
    await page.fill("#agent-soul", "# 诗人\n\nYou write **short** poems.")
    await page.check("#agent-knowledge")
    await page.click("#agent-soul-preview-tab")
    assert await page.text_content("#agent-soul-preview strong") == "short"
    await page.click("#agent-save")
    await page.locator(".agent-row", has_text="诗人").wait_for()
    await page.keyboard.press("Escape")
    created = [a for a in app.xj.engine.agents.all() if a["name"] == EVIL_AGENT]
    assert len(created) == 1 and created[0]["knowledge"] is True  # the editor's knowledge switch reached the API
    await open_dm(page, EVIL_AGENT)

    # a reply that stalls half-way: its first half is on screen while it streams, then it is stopped
    slow = "Spring rain on the roof, falling"
    fake.script(Reply(text=slow, chunks=4, hang_after=2))
    await say(page, "hello <img src=x onerror=\"window.__xss.push('msg')\">")
    own = page.locator(".msg.own .msg-body").last
    await expect(own).to_have_text("hello")  # the markup is sanitized: an inert image remains
    attrs = await own.locator("img").evaluate("i => i.getAttributeNames()")
    assert attrs and not [a for a in attrs if a.startswith("on") or a == "src"]
    streaming = page.locator(".msg.agent.streaming")
    await expect(streaming.locator(".md")).to_have_text("".join(split_text(slow, 4)[:2]).strip())
    await expect(page.locator("#btn-stop")).to_be_visible()
    await page.click("#btn-stop")
    await expect(streaming).to_have_count(0)
    await expect(page.locator("#btn-stop")).to_be_hidden()
    await expect(page.locator(".msg.agent .msg-flag").last).to_have_text("Stopped")

    # a whole streamed reply in markdown
    fake.script(Reply(text=POEM, chunks=5))
    await say(page, "a poem in a table, please")
    done = page.locator(".msg.agent:not(.streaming)").nth(1)
    await expect(done.locator(".md strong")).to_have_text("Spring")
    await expect(done.locator(".md table td").last).to_have_text("春雨")
    assert await done.locator(".msg-name").text_content() == EVIL_AGENT
    sent = fake.last.json["messages"]
    assert sent[0]["role"] == "system" and "You write **short** poems." in sent[0]["content"]
    assert sent[-1] == {"role": "user", "content": "a poem in a table, please"}
    await no_attack_ran(page)
    assert page.errors == []
    await page.context.close()


async def test_group_mention_autocomplete_and_xss_file_name(browser, site, tmp_path):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    agents = (await (await page.request.get(base + "/api/agents")).json())["agents"]
    assert len(agents) >= 2
    await page.click("#btn-new-group")
    await page.fill("#group-name", "写作工作室")
    for a in agents[:2]:
        await page.check(f"#group-members input[value='{a['id']}']")
    await page.click("#group-save")
    await expect(page.locator("#chat-name")).to_have_text("写作工作室")
    first, second = agents[0]["name"], agents[1]["name"]
    await page.type("#composer-input", "@" + first[:1])
    await page.locator("#mention-popup:not([hidden]) .mention-item").first.wait_for()
    await page.keyboard.press("Enter")
    assert await page.input_value("#composer-input") == f"@{first} "
    await page.type("#composer-input", "写一首诗")
    await page.keyboard.press("Enter")
    reply = page.locator(".msg.agent:not(.streaming)")
    await expect(reply.locator(".md")).to_have_text(f"Echo: @{first} 写一首诗")
    await expect(reply.locator(".msg-name")).to_have_text(first)
    assert second != first
    evil = tmp_path / "<img src=x onerror=window.__xss.push(1)>.txt"
    evil.write_text("just text", encoding="utf-8")
    await page.set_input_files("#file-input", str(evil))
    await expect(page.locator("#attachments .attachment:not(.uploading) .file-name")).to_have_text(evil.name)
    await page.click("#btn-send")  # the file goes with the message being written, not on its own
    link = page.locator(".msg.own .file-name").last
    await expect(link).to_have_text(evil.name)
    await no_attack_ran(page)
    await page.context.close()


async def test_a_tool_call_shows_as_a_card_from_calling_to_completed(browser, site, fake, tool):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    await create_agent_in_editor(page, "Researcher", tools=["slow_lookup"])
    await open_dm(page, "Researcher")
    fake.script(Reply(tool_calls=[Call("slow_lookup", {"topic": "虾饺"}, id="call_1")]),
                Reply(text="A **shrimp dumpling**.", chunks=2))
    await say(page, "what is 虾饺?")
    card = page.locator(".msg.agent .tool-card")
    await expect(card).to_have_attribute("data-status", "calling")
    await expect(card.locator(".tool-name")).to_have_text("slow_lookup")
    await expect(card.locator(".tool-status")).to_have_text("calling…")
    assert tool.calls == [{"topic": "虾饺"}]
    tool.go.set()
    await expect(card).to_have_attribute("data-status", "completed")
    await expect(card.locator(".tool-status")).to_have_text("done")
    await card.locator("summary").click()
    await expect(card.locator(".tool-result")).to_have_text("found 虾饺")
    await expect(page.locator(".msg.agent:not(.streaming) .md strong")).to_have_text("shrimp dumpling")
    await expect(card).to_have_count(1)
    # after a reload the stored call shows as one finished card too
    await page.reload()
    await page.wait_for_selector("body[data-ready=app]")
    await expect(page.locator(".msg .tool-card[data-status=completed] .tool-result")).to_have_text("found 虾饺")
    await expect(page.locator(".msg .tool-card")).to_have_count(1)  # call and result: one card
    # inside the reply it belongs to (stored before it), not a message of its own
    await expect(page.locator(".msg.agent", has=page.locator(".tool-card"))).to_contain_text("shrimp dumpling")
    await expect(page.locator(".msg.agent")).to_have_count(1)
    await page.context.close()


async def test_upload_a_document_to_an_agent_and_see_it_indexed(browser, site, tmp_path):
    app, base = site
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
    await expect(row).to_have_attribute("data-status", "ready", timeout=30000)
    await expect(row.locator(".doc-chunks")).to_have_text(re.compile(r"^[1-9]\d* chunks$"))
    await page.context.close()


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_many_documents_and_a_folder_upload_in_one_view(browser, site, tmp_path, viewport):
    app, base = site
    page = await owner_page(browser, base, viewport)
    await page.click("#btn-new-dm")
    await page.click(".agent-option >> nth=0")
    await page.wait_for_selector("#btn-knowledge:not([hidden])")
    await page.click("#btn-knowledge")
    files = []
    for i in range(4):
        doc = tmp_path / f"note-{i}.md"
        doc.write_text(f"# Note {i}\n\nThe release train number {i} leaves on Friday.\n", encoding="utf-8")
        files.append(str(doc))
    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ\x90\x00 not a document")
    await page.set_input_files("#knowledge-file", [*files[:2], str(bad), *files[2:]])
    batch = page.locator(".upload-batch")
    await expect(batch.locator(".batch-status")).to_have_text("Uploaded 4 of 5 documents; 1 failed", timeout=30000)
    await expect(batch).to_have_count(1)  # one view for the whole selection
    await expect(batch.locator(".batch-failures li")).to_have_count(1)
    await expect(batch.locator(".batch-failures li")).to_contain_text("tool.exe")
    await expect(page.locator(".toast")).to_have_count(1)  # one notice, not one per file
    await page.screenshot(path=str(SHOTS_DIR / f"knowledge-batch-{viewport['width']}.png") if SHOTS_DIR
                          else str(tmp_path / "batch.png"))
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"]  # nothing pushes the page wider than the screen
    for i in range(4):
        await expect(page.locator(".doc", has_text=f"note-{i}.md")).to_have_count(1)
    await batch.locator("button").click()
    await expect(batch).to_have_count(0)
    # a folder: its documents go up, the rest of its files are left out
    folder = tmp_path / "handbook"
    (folder / "sub").mkdir(parents=True)
    (folder / "intro.md").write_text("# Intro\n\nWelcome aboard.\n", encoding="utf-8")
    (folder / "sub" / "部署.txt").write_text("运行 python run.py 即可启动。\n", encoding="utf-8")
    (folder / ".DS_Store").write_bytes(b"\x00\x01junk")
    await page.set_input_files("#knowledge-folder", str(folder))
    await expect(page.locator(".upload-batch .batch-status")).to_have_text("Uploaded 2 of 2 documents, indexing",
                                                                         timeout=30000)
    await expect(page.locator(".doc", has_text="部署.txt")).to_have_count(1)
    await expect(page.locator(".doc", has_text="intro.md")).to_have_count(1)
    await expect(page.locator(".doc")).to_have_count(6)
    await page.context.close()


async def test_owner_adds_a_provider_tests_it_and_chats_through_it(browser, tmp_path):
    """The README path on a fresh install: only the offline demo model, then a provider added in Settings."""
    async with FakeLLM() as other, live_server(make_settings(tmp_path, demo_delay=0.0, allow_private_provider_urls=True)) as (app, base):
        page = await new_page(browser, base)
        await log_in(page, base)
        await page.click("#btn-settings")
        await page.fill("#provider-name", "lab")
        await page.select_option("#provider-kind", "openai")
        await page.fill("#provider-base", other.base_url)
        await page.fill("#provider-key", "sk-lab-secret-123456")
        await page.fill("#provider-models", "fake-model, fake-model-2")
        await page.click("#provider-add")
        row = page.locator(".provider[data-name=lab]")
        await expect(row.locator(".key-masked")).not_to_contain_text("sk-lab-secret-123456")
        other.script(Reply(text="ok"))
        await row.locator(".act-test").click()
        await expect(row.locator(".test-result")).to_contain_text("✓")
        await page.select_option("#default-model", "lab/fake-model")
        await page.click("#default-model-save")
        await expect(page.locator(".toast").last).to_have_text("Saved")
        await page.keyboard.press("Escape")
        name = (await (await page.request.get(base + "/api/agents")).json())["agents"][0]["name"]
        await open_dm(page, name)
        other.script(Reply(text="Hello from **lab**", chunks=3))
        await say(page, "你好")
        await expect(page.locator(".msg.agent:not(.streaming) .md strong")).to_have_text("lab")
        assert other.last.json["model"] == "fake-model"
        assert other.last.headers["authorization"] == "Bearer sk-lab-secret-123456"
        await page.context.close()


async def test_a_chain_runs_in_the_collaboration_panel_with_approval(browser, site, fake):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    agents = (await (await page.request.get(base + "/api/agents")).json())["agents"][:2]
    await page.click("#btn-new-group")
    await page.fill("#group-name", "接力")
    for a in agents:
        await page.check(f"#group-members input[value='{a['id']}']")
    for a in agents:
        await page.select_option("#group-chain-add", a["id"])
    await page.check("#group-approval")
    await page.click("#group-save")
    await expect(page.locator("#chat-name")).to_have_text("接力")
    fake.script(Reply(text="Draft: 虾饺 are dumplings."), Reply(text="Final: shrimp dumplings."))
    await say(page, "write about 虾饺")
    chain = page.locator("#panel .chain")
    await expect(chain).to_have_attribute("data-status", "paused")
    await expect(chain.locator(".handoff")).to_have_value("Draft: 虾饺 are dumplings.")
    await expect(chain.locator(".step").first).to_have_attribute("data-state", "completed")
    await chain.locator(".handoff").fill("Draft: shrimp dumplings (edited).")
    await chain.locator(".act-approve").click()
    await expect(chain).to_have_attribute("data-status", "completed")
    await expect(chain.locator(".step[data-state=completed]")).to_have_count(2)
    replies = page.locator(".msg.agent:not(.streaming)")
    await expect(replies).to_have_count(2)
    await expect(replies.nth(1).locator(".md")).to_have_text("Final: shrimp dumplings.")
    await expect(replies.nth(1).locator(".msg-name")).to_have_text(agents[1]["name"])
    assert "Draft: shrimp dumplings (edited)." in fake.last.json["messages"][-1]["content"]
    await page.context.close()


async def test_unread_counts_come_from_the_server_and_opening_a_chat_clears_them(browser, site):
    from xiajiao import auth, chat

    app, base = site
    core = app.xj
    guest = await auth.create_user(core.db, username="visitor", password="visitor-pass-1", role="guest")
    owner = await auth.owner(core.db)
    lobby = await chat.create_channel(core.db, name="Lobby", type="group", creator_id=owner["id"], agent_ids=[],
                                      user_ids=[guest["id"]], default_agent_id=None)
    for text in ("one", "two", "three"):
        await chat.create_message(core, channel_id=lobby["id"], content=text, user_id=owner["id"])
    # a newer chat is the one the app opens first, so the lobby stays unread on arrival
    later = await chat.create_channel(core.db, name="Later", type="group", creator_id=owner["id"], agent_ids=[],
                                      user_ids=[guest["id"]], default_agent_id=None)
    await chat.create_message(core, channel_id=later["id"], content="newest", user_id=owner["id"])
    # a fresh browser (nothing in its storage): the badge can only come from the server
    page = await new_page(browser, base)
    await log_in(page, base, password="visitor-pass-1", username="visitor")
    item = page.locator(".chat-item", has_text="Lobby")
    await expect(item.locator(".badge")).to_have_text("3")
    await item.click()
    await expect(page.locator("#chat-name")).to_have_text("Lobby")
    await expect(item.locator(".badge")).to_have_count(0)

    async def marker():
        return await core.db.fetchval("SELECT last_read_seq FROM channel_members WHERE channel_id = ? "
                                      "AND member_id = ?", (lobby["id"], guest["id"]))

    last = await core.db.fetchval("SELECT MAX(seq) FROM messages WHERE channel_id = ?", (lobby["id"],))
    for _ in range(100):  # the read marker reaches the server (debounced by a second)
        if await marker() == last:
            break
        await asyncio.sleep(0.05)
    assert await marker() == last
    again = await new_page(browser, base)
    await log_in(again, base, password="visitor-pass-1", username="visitor")
    await expect(again.locator("#chat-name")).to_have_text("Later")
    await expect(again.locator(".chat-item", has_text="Lobby")).to_be_visible()
    await expect(again.locator(".chat-item", has_text="Lobby").locator(".badge")).to_have_count(0)
    await page.context.close()
    await again.context.close()


ATTACK_PAGE = """<!doctype html><html><body>
<form id="out" method="post" action="{base}/api/logout" target="sink"></form>
<iframe name="sink"></iframe>
<script>
const form = new FormData();
form.append("file", new Blob(["planted by another origin"], {{type: "text/plain"}}), "planted.txt");
fetch("{base}/api/upload", {{method: "POST", body: form, credentials: "include", mode: "no-cors"}})
  .then(() => {{ document.title = "sent"; document.getElementById("out").submit(); }});
</script></body></html>"""


async def test_a_page_of_another_origin_cannot_act_with_the_users_cookie(browser, site):
    """CSRF: a page on another port of the same host (same site, other origin) posts a multipart upload
    (no preflight) and a logout form; both are refused and the user stays logged in."""
    import http.server
    import threading

    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    html = ATTACK_PAGE.format(base=base).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    refused = []
    page.on("response", lambda r: refused.append((r.url, r.status)) if r.url.startswith(base + "/api/") else None)
    try:
        await page.goto(f"http://127.0.0.1:{other.server_address[1]}/attack")
        await expect(page).to_have_title("sent")
        for _ in range(200):
            if len(refused) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        other.shutdown()
    assert sorted(refused) == [(base + "/api/logout", 403), (base + "/api/upload", 403)]
    assert [p for p in app.xj.uploads_dir.rglob("*") if p.is_file()] == []
    assert (await page.request.get(base + "/api/me")).status == 200
    await page.context.close()


LOOK_LOCAL = [
    '<a href="/\\evil.example/phish">backslash</a>',
    '<a href="/\t/evil.example/tab">tab</a>',
    "[slashes](//evil.example/y)",
    '<a href="\\\\evil.example/z">two backslashes</a>',
    '<img src="//evil.example/pixel.png" alt="p">',
    '<img src="/\\evil.example/pixel.png" alt="q">',
    "[fine](/uploads/2026-12/a.txt) [web](https://example.org/) [top](#top)",
]


async def test_links_that_only_look_local_do_not_lead_to_another_host(browser, site):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    for i, src in enumerate(LOOK_LOCAL):
        await page.evaluate("""async ([src, id]) => {
            const { renderInto } = await import('/static/js/render.js');
            const { t } = await import('/static/js/i18n.js');
            const el = document.createElement('div');
            el.id = id; el.className = 'probe';
            document.body.appendChild(el);
            renderInto(el, src, t);
        }""", [src, f"l{i}"])
    for kind in ("file", "image"):
        await page.evaluate("""async ([kind]) => {
            const { messageEl } = await import('/static/js/messages.js');
            const el = messageEl({id: 'msg_' + kind, channelId: 'c', type: kind, content: '//evil.example/f.pdf',
                                  metadata: {fileName: 'f.pdf'}, createdAt: new Date().toISOString()});
            el.classList.add('probe');
            document.body.appendChild(el);
        }""", [kind])
    resolved = await page.eval_on_selector_all(
        ".probe a[href], .probe img[src]", "els => els.map(e => (e.href || e.src))")
    hosts = {re.match(r"^[a-z]+:(//)?([^/]*)", u).group(2) for u in resolved}
    assert "evil.example" not in " ".join(hosts), resolved
    assert base + "/uploads/2026-12/a.txt" in resolved and "https://example.org/" in resolved
    await page.context.close()


CITED_GUIDE = ("# Harbor guide\n\n" + "\n\n".join(
    f"## Crane {i}\n\nThe harbor crane number {i} lifts containers of grade {i} along quay {i}." for i in range(40))
    + "\n\n## Refunds\n\nA subscription cancelled within 14 days is refunded in full. Nothing is refunded for "
    "partial months.\n\n" + "\n\n".join(f"## Berth {i}\n\nBerth {i} takes ships up to {i * 10} metres." for i in range(40)))


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_a_citation_in_a_reply_opens_its_document_at_the_cited_passage(browser, tmp_path, fake, viewport):
    from test_memory import add_agent
    from test_rag import ingest

    settings = llm_settings(tmp_path, fake, embedder="hash", parent_chunk_size=200, chunk_size=100)
    async with live_server(settings) as (app, base):
        await add_agent(app, "agent_kb", "Librarian", knowledge=1)
        api = app.test_client()
        await api.post("/api/login", json={"password": OWNER_PASSWORD})
        assert (await ingest(api, "agent_kb", "harbor.md", CITED_GUIDE.encode()))["status"] == "ready"
        page = await owner_page(browser, base, viewport)
        await open_dm(page, "Librarian")
        fake.script(Reply(text="Yes: cancelled within 14 days, it is refunded in full [1]. See `[2]` in code.",
                          chunks=3))
        await say(page, "Is a subscription cancelled within 14 days refunded in full?")
        reply = page.locator(".msg.agent:not(.streaming) .md").last
        link = reply.locator("a.cite")
        await expect(link).to_have_count(1)  # the marker in code stays text
        await expect(link).to_have_text("[1]")
        await link.click()
        panel = page.locator("#panel")
        await expect(panel).to_be_visible()
        await expect(page.locator("#panel-title")).to_have_text("Source [1]")
        await expect(panel.locator(".citation-doc")).to_have_text("harbor.md")
        cited = panel.locator(".citation-passage.cited")
        await expect(cited).to_have_count(1)
        await expect(cited).to_contain_text("A subscription cancelled within 14 days is refunded in full.")
        await expect(cited.locator(".citation-heading")).to_have_text("Harbor guide › Refunds")
        assert await panel.locator(".citation-passage").count() > 40  # the document around it, not the passage alone
        await expect(cited).to_be_in_viewport()  # scrolled to it
        await page.screenshot(path=str(SHOTS_DIR / f"citation-{viewport['width']}.png") if SHOTS_DIR
                              else str(tmp_path / "citation.png"))
        assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        await page.click("#panel-close")
        await expect(panel).to_be_hidden()
        assert page.errors == []
        await page.context.close()
