"""The approval card in a real Chromium, with two people in one group: the owner (whose message
started the turn) edits the arguments and approves; the member sees the same card with its buttons
disabled, and both see the decision live and after a reload; desktop and phone."""
from __future__ import annotations

import os

import pytest
import pytest_asyncio
from playwright.async_api import expect

from chat_helpers import PASSWORD
from conftest import live_server, llm_settings
from fake_llm import Call, Reply
from test_ui_browser import VIEWPORTS, browser, fake, log_in, new_page, owner_page  # noqa: F401  (fixtures)
from xiajiao import Tool, auth, chat, hookimpl

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
SHOTS = os.environ.get("XIAJIAO_SHOTS")  # a folder: also keep the screenshots there


class NoteTool:
    def __init__(self):
        self.calls: list[dict] = []

    @hookimpl
    def register_tools(self, register):
        async def post_note(args, ctx):
            self.calls.append(args)
            return f"posted: {args['text']}"

        register(Tool("post_note", "Post a note on the team board", {
            "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}, post_note,
            read_only=False, mutating=True, approval=True))


@pytest_asyncio.fixture(loop_scope="module")
async def site(tmp_path, fake):
    tool = NoteTool()
    async with live_server(llm_settings(tmp_path, fake), plugins=[tool]) as (app, base):
        await app.xj.engine.agents.update("novelist", {"tools": ["post_note"]})
        owner = await auth.owner(app.xj.db)
        mia = await auth.create_user(app.xj.db, username="mia", password=PASSWORD, role="member")
        ch = await chat.create_channel(app.xj.db, name="Board", type="group", creator_id=owner["id"],
                                       agent_ids=["novelist"], user_ids=[mia["id"]], default_agent_id="novelist")
        yield app, base, ch, tool


async def shot(page, tmp_path, name):
    await page.screenshot(path=str(tmp_path / f"{name}.png"))
    if SHOTS:
        await page.screenshot(path=os.path.join(SHOTS, f"{name}.png"))


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=["desktop", "phone"])
async def test_the_approval_card_for_the_owner_and_a_member(browser, site, fake, viewport, tmp_path):  # noqa: F811
    app, base, ch, tool = site
    owner = await owner_page(browser, base, viewport)
    member = await new_page(browser, base)
    await member.set_viewport_size(viewport)
    await log_in(member, base, PASSWORD, "mia")
    for page in (owner, member):
        await page.goto(base + f"/#/c/{ch['id']}")
        await page.wait_for_selector("body[data-ready=app]")
        await expect(page.locator("#composer-input")).to_be_visible()
    fake.script(Reply(tool_calls=[Call("post_note", {"text": "Standup at 9"}, id="call_1")]),
                Reply(text="The note is on the board."))
    await owner.fill("#composer-input", "Put the standup time on the board")
    await owner.press("#composer-input", "Enter")

    mine, theirs = owner.locator(".approval"), member.locator(".approval")
    await expect(mine.locator(".act-approve")).to_be_enabled()
    await expect(theirs.locator(".act-approve")).to_be_disabled()
    await expect(theirs.locator(".act-reject")).to_be_disabled()
    await expect(theirs.locator(".approval-waiting")).to_contain_text("Owner")
    await expect(owner.locator(".tool-card .tool-status").first).to_have_text("waiting for approval")
    width = viewport["width"]
    await shot(owner, tmp_path, f"approval-owner-{width}")
    await shot(member, tmp_path, f"approval-member-{width}")

    # a reload while it waits: the card is back, still waiting
    await owner.reload()
    await owner.wait_for_selector("body[data-ready=app]")
    area = owner.locator(".approval-args")
    await expect(area).to_have_value('{\n  "text": "Standup at 9"\n}')
    await expect(owner.locator(".act-approve-edit")).to_be_disabled()
    await area.fill('{"text": "Standup at 9:30"')  # broken JSON is caught before it is sent
    await owner.click(".act-approve-edit")
    await expect(owner.locator(".approval-error")).to_have_text("The arguments are not a valid JSON object.")
    await area.fill('{"text": "Standup at 9:30"}')
    await expect(owner.locator(".act-approve")).to_be_disabled()
    await owner.click(".act-approve-edit")

    for page in (owner, member):
        await expect(page.locator(".approval-state")).to_have_text("Approved with changes by Owner")
        await expect(page.locator(".msg .md").last).to_have_text("The note is on the board.")
    assert tool.calls == [{"text": "Standup at 9:30"}]
    await member.reload()
    await member.wait_for_selector("body[data-ready=app]")
    await expect(member.locator(".approval-state")).to_have_text("Approved with changes by Owner")
    await expect(member.locator(".tool-card .tool-args")).to_contain_text("Standup at 9:30")
    await member.locator(".tool-card summary").first.click()  # the stored card opens like any other
    await shot(member, tmp_path, f"approval-decided-{width}")
    for page in (owner, member):
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        assert [e for e in page.errors if not e.startswith("dialog")] == []
        await page.context.close()
