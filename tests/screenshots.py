"""Re-take the README's screenshots (docs/screenshots/*.png) from live screens.

Run by hand (pytest does not collect this file):

    /work/main/.venv/bin/python tests/screenshots.py [out_dir] [--team]

(``--team``: only the team screens, a group of people and agents on a desktop and a phone.)

It starts the real server with its models on the fake model server (tests/fake_llm.py),
drives Debian's Chromium headless through the main screens in Chinese and English and
writes one PNG per screen.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this checkout wins over an installed xiajiao

from conftest import live_server, llm_settings  # noqa: E402
from fake_llm import Call, FakeLLM, Reply  # noqa: E402
from playwright.async_api import async_playwright, expect  # noqa: E402
from test_ui_browser import ARGS, CHROMIUM, SlowTool, log_in, open_dm, say  # noqa: E402

ARGV = [a for a in sys.argv[1:] if not a.startswith("--")]
OUT = Path(ARGV[0]) if ARGV else HERE.parent / "docs" / "screenshots"
ONLY_TEAM = "--team" in sys.argv

REPLY_EN = """Here is a **deployment checklist**:

| Step | Command |
| --- | --- |
| Install | `pip install xiajiao` |
| Run | `xiajiao serve` |

```python
def answer(question: str) -> str:
    return f"Looking into {question!r}"
```

Latency grows as $O(n \\log n)$ with the history length.
"""

REPLY_ZH = """虾饺是广式早茶的**经典点心**：

1. 晶莹的澄面皮
2. 整只鲜虾做馅
3. 蒸四分钟即可

```mermaid
graph LR
  A[和面] --> B[包馅] --> C[蒸]
```
"""


async def shot(page, name: str, selector: str | None = None) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    target = page.locator(selector) if selector else page
    await target.screenshot(path=str(OUT / f"{name}.png"))
    print("wrote", OUT / f"{name}.png")


async def page_for(browser, base, lang: str, *, dark: bool = False, mobile: bool = False):
    ctx = await browser.new_context(
        locale="en-US" if lang == "en" else "zh-CN", service_workers="block", color_scheme="dark" if dark else "light",
        viewport={"width": 390, "height": 780} if mobile else {"width": 1280, "height": 800},
        device_scale_factor=1)
    await ctx.add_cookies([{"name": "lang", "value": lang, "url": base}])
    return await ctx.new_page()


async def team_screens(browser, app, base) -> None:
    """A group of people and agents: the owner's desktop with the member list, a member's phone."""
    from xiajiao import auth, chat

    db = app.xj.db
    owner = await auth.owner(db)
    await auth.update_profile(db, owner["id"], display_name="Lin Owner")
    alice = await auth.create_user(db, username="alice", password="team-password-1", role="member",
                                   display_name="Alice Wong")
    vera = await auth.create_user(db, username="vera", password="team-password-1", role="guest",
                                  display_name="Vera Guest")
    await auth.update_profile(db, vera["id"], avatar="🌸")
    room = await chat.create_channel(db, name="Launch team", type="group", creator_id=owner["id"],
                                     agent_ids=["editor", "translator"], user_ids=[alice["id"], vera["id"]],
                                     default_agent_id=None)
    for who, text in ((owner, "Welcome, everyone: the launch note is due on Friday."),
                      (alice, "@vera can you read the draft tonight?"),
                      (vera, "Sure, send it over 👍")):
        await chat.create_message(app.xj, channel_id=room["id"], user_id=who["id"], content=text)
    await chat.create_message(app.xj, channel_id=room["id"], agent_id="editor",
                              content="I can polish it too: **@编辑** me with the text.")
    page = await page_for(browser, base, "en")
    await log_in(page, base)
    await page.locator(".chat-item", has_text="Launch team").click()
    await page.click("#btn-members")
    await page.locator("#member-list .member-row").nth(4).wait_for()
    await shot(page, "team-desktop-en")
    await page.context.close()
    page = await page_for(browser, base, "en", mobile=True)
    await page.goto(base + "/login")
    await page.fill("#login-username", "alice")
    await page.fill("#login-password", "team-password-1")
    await page.click("#login-submit")
    await page.wait_for_selector("body[data-ready=app]")
    await shot(page, "team-phone-list-en")
    await page.locator(".chat-item", has_text="Launch team").click()
    await page.locator(".msg", has_text="Sure, send it over").wait_for()
    await shot(page, "team-phone-en")
    await page.context.close()


async def main() -> None:
    tool = SlowTool()
    tool.go.set()  # the tool answers at once here
    with tempfile.TemporaryDirectory() as tmp:
        async with FakeLLM() as fake, async_playwright() as p, \
                live_server(llm_settings(Path(tmp), fake), plugins=[tool]) as (app, base):
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            if ONLY_TEAM:
                await team_screens(browser, app, base)
                await browser.close()
                return
            agents = app.xj.engine.agents.all()
            first, second = agents[0], agents[1]
            await app.xj.engine.agents.update(first["id"], {"tools": [*first["tools"], "slow_lookup"]})

            # login, both languages
            for lang in ("zh", "en"):
                page = await page_for(browser, base, lang)
                await page.goto(base + "/login")
                await shot(page, f"login-{lang}")
                await page.context.close()

            # a DM: a finished markdown reply, then one caught while it streams
            page = await page_for(browser, base, "en")
            await log_in(page, base)
            await open_dm(page, first["name"])
            fake.script(Reply(text=REPLY_EN, chunks=12))
            await say(page, "How do I deploy Xiajiao?")
            await page.locator(".msg.agent:not(.streaming) .md table").wait_for()
            await shot(page, "chat-en")
            fake.script(Reply(text="Let me think about the **trade-offs** between SQLite and Postgres here…",
                              chunks=8, hang_after=6))
            await say(page, "SQLite or Postgres?")
            await page.locator(".msg.agent.streaming .md strong").wait_for()
            await expect(page.locator("#btn-stop")).to_be_visible()
            await shot(page, "chat-streaming-en")
            await page.click("#btn-stop")
            await expect(page.locator(".msg.agent.streaming")).to_have_count(0)

            # a tool card
            fake.script(Reply(tool_calls=[Call("slow_lookup", {"topic": "虾饺"}, id="call_1")]),
                        Reply(text="A **shrimp dumpling**, steamed for four minutes.", chunks=3))
            await say(page, "Look up 虾饺 for me")
            card = page.locator(".msg.agent .tool-card[data-status=completed]").last
            await card.wait_for()
            await card.locator("summary").click()
            await page.locator(".msg.agent:not(.streaming) .md strong >> text=shrimp dumpling").wait_for()
            await page.locator(".msg").last.scroll_into_view_if_needed()
            await shot(page, "tool-card-en")

            # settings
            await page.click("#btn-settings")
            await page.locator(".provider").first.wait_for()
            await shot(page, "settings-en")
            await page.context.close()

            # Chinese: a group with an @mention, the knowledge panel, settings, the collaboration panel
            page = await page_for(browser, base, "zh")
            await log_in(page, base)
            await page.click("#btn-new-group")
            await page.fill("#group-name", "写作工作室")
            for a in (first, second):
                await page.check(f"#group-members input[value='{a['id']}']")
            await page.click("#group-save")
            await expect(page.locator("#chat-name")).to_have_text("写作工作室")
            fake.script(Reply(text=REPLY_ZH, chunks=10))
            await say(page, f"@{first['name']} 介绍一下虾饺")
            await page.locator(".msg.agent:not(.streaming) .mermaid-block[data-state=done] svg").wait_for(timeout=20000)
            await page.type("#composer-input", "@" + second["name"][:1])
            await page.locator("#mention-popup:not([hidden]) .mention-item").first.wait_for()
            await shot(page, "group-mention-zh")
            await page.fill("#composer-input", "")

            await open_dm(page, first["name"])
            await page.click("#btn-knowledge")
            doc = Path(tmp) / "部署指南.md"
            doc.write_text("# 部署\n\n运行 `xiajiao serve` 即可启动服务。\n" * 30, encoding="utf-8")
            await page.set_input_files("#knowledge-file", str(doc))
            await expect(page.locator(".doc", has_text="部署指南.md")).to_have_attribute("data-status", "ready",
                                                                                      timeout=30000)
            await shot(page, "knowledge-zh")

            await page.click("#btn-settings")
            await page.locator(".provider").first.wait_for()
            await shot(page, "settings-zh")
            await page.keyboard.press("Escape")

            await page.click("#btn-new-group")
            await page.fill("#group-name", "接力写作")
            for a in (first, second):
                await page.check(f"#group-members input[value='{a['id']}']")
            for a in (first, second):
                await page.select_option("#group-chain-add", a["id"])
            await page.check("#group-approval")
            await page.click("#group-save")
            await expect(page.locator("#chat-name")).to_have_text("接力写作")
            fake.script(Reply(text="初稿：虾饺皮薄透亮，鲜虾弹牙。", chunks=4), Reply(text="定稿：皮薄如纸，虾仁鲜甜。", chunks=4))
            await say(page, "写一段介绍虾饺的文案")
            await expect(page.locator("#panel .chain")).to_have_attribute("data-status", "paused")
            await shot(page, "collab-zh")
            await page.locator("#panel .chain .act-approve").click()
            await expect(page.locator("#panel .chain")).to_have_attribute("data-status", "completed")
            await page.context.close()

            # dark theme and a phone
            page = await page_for(browser, base, "en", dark=True)
            await log_in(page, base)
            await open_dm(page, first["name"])
            await page.locator(".msg.agent .md table").first.wait_for()
            await shot(page, "chat-dark")
            await page.context.close()
            page = await page_for(browser, base, "zh", mobile=True)
            await log_in(page, base)
            await shot(page, "mobile-zh")
            await page.context.close()
            await team_screens(browser, app, base)
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
