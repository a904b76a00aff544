"""Workflows in a real Chromium: a group's workflow is created in the Workflows panel (from the group
settings too), started with an input, waits at its approval step with the button in the channel,
and completes after the click; started from the composer with "/name input" (the list after "/",
picked with the keyboard), and a person who may not post is told why, in words; on a desktop and a
phone."""
from __future__ import annotations

import pytest
import pytest_asyncio
from playwright.async_api import expect

from chat_helpers import PASSWORD, make_user
from conftest import live_server, make_settings
from plugins.workflows import store
from test_ui_browser import SHOTS_DIR, VIEWPORTS, browser, log_in, new_page, owner_page  # noqa: F401
from xiajiao import auth, chat

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module")
async def site(tmp_path_factory):
    async with live_server(make_settings(tmp_path_factory.mktemp("wf"), demo_delay=0.0)) as (app, base):
        yield app, base


async def shot(page, tmp_path, name):
    await page.screenshot(path=str(SHOTS_DIR / name) if SHOTS_DIR else str(tmp_path / name))


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_create_a_workflow_start_it_and_approve_a_step(browser, site, viewport, tmp_path):  # noqa: F811
    app, base = site
    owner = await auth.owner(app.xj.db)
    ch = await chat.create_channel(app.xj.db, name="写作室", type="group", creator_id=owner["id"],
                                   agent_ids=["novelist", "editor"], user_ids=[])
    page = await owner_page(browser, base, viewport)
    await page.goto(f"{base}/#/c/{ch['id']}")
    await page.wait_for_selector("#btn-channel-settings:not([hidden])")
    await page.click("#btn-channel-settings")  # the group settings lead to the workflows
    await page.click("#group-workflows")
    await expect(page.locator("#workflows")).to_be_visible()
    await page.click(".wf-new")
    await page.fill("#wf-name", "Poem pipeline")
    await page.locator(".wf-edit-step >> nth=0").locator(".wf-instruction").fill("Write a poem about {{input}}")
    await page.click(".wf-add-step")
    second = page.locator(".wf-edit-step >> nth=1")
    await second.locator(".wf-agent").select_option("editor")
    await second.locator(".wf-instruction").fill("Polish: {{previous}}")
    await second.locator(".wf-approval").check()
    await shot(page, tmp_path, f"workflow-editor-{viewport['width']}.png")
    await page.click("#wf-save")
    card = page.locator(".workflow")
    await expect(card).to_have_count(1)
    await expect(card.locator(".wf-steps")).to_contain_text("编辑 (asks first)")
    await expect(card.locator(".wf-token code")).to_contain_text("/api/triggers/wf_")

    await card.locator(".wf-input").fill("the sea")
    await card.locator(".wf-start").click()
    run = page.locator(".wf-run").first
    await expect(run).to_have_attribute("data-status", "paused", timeout=15000)
    await expect(run.locator(".wf-approve")).to_be_visible()
    await expect(page.locator("#messages .msg", has_text="the sea").first).to_be_attached()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"]
    await shot(page, tmp_path, f"workflow-paused-{viewport['width']}.png")

    await run.locator(".wf-approve").click()
    await expect(page.locator(".wf-run").first).to_have_attribute("data-status", "completed", timeout=15000)
    await expect(page.locator(".wf-run").first.locator(".step.done")).to_have_count(2)
    await shot(page, tmp_path, f"workflow-done-{viewport['width']}.png")
    rows = await app.xj.db.fetchall("SELECT agent_id FROM messages WHERE channel_id = ? ORDER BY seq", (ch["id"],))
    assert [r["agent_id"] for r in rows] == [None, "novelist", "editor"]
    assert page.errors == []
    await page.context.close()


async def poem_group(app, name, guest=None):
    owner = await auth.owner(app.xj.db)
    ch = await chat.create_channel(app.xj.db, name=name, type="group", creator_id=owner["id"],
                                   agent_ids=["novelist", "editor"], user_ids=[guest["id"]] if guest else [])
    steps = store.check_steps(app.xj, [{"agentId": "novelist", "instruction": "Write a poem about {{input}}"},
                                       {"agentId": "editor", "instruction": "Polish: {{previous}}", "approval": True}],
                              {"novelist", "editor"})
    await store.create(app.xj, channel_id=ch["id"], name="Poem pipeline", steps=steps, stop_when=None,
                       creator=owner["id"])
    return ch


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_start_a_workflow_from_the_composer(browser, site, viewport, tmp_path):  # noqa: F811
    app, base = site
    ch = await poem_group(app, f"诗社 {viewport['width']}")
    page = await owner_page(browser, base, viewport)
    await page.goto(f"{base}/#/c/{ch['id']}")
    box = page.locator("#composer-input")
    await expect(box).to_be_visible()
    await box.press_sequentially("/")
    popup = page.locator("#mention-popup[data-kind=command]")
    await expect(popup).to_be_visible()
    item = popup.locator(".command-item")
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("/poem-pipeline")
    await expect(item).to_contain_text("小说家 → 编辑 (asks first)")
    await box.press_sequentially("po")
    await shot(page, tmp_path, f"workflow-command-list-{viewport['width']}.png")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"]
    await box.press("Enter")  # picks the workflow; it does not send anything
    await expect(box).to_have_value("/poem-pipeline ")
    await expect(popup).to_be_hidden()
    hint = page.locator("#composer-hint")
    await expect(hint).to_have_attribute("data-kind", "command")
    await expect(hint).to_contain_text("Poem pipeline")
    await box.press("Enter")  # no input yet: said, nothing started
    await expect(hint).to_have_attribute("data-kind", "error")
    await expect(hint).to_contain_text("should work on")
    await box.press_sequentially("the sea")
    await expect(hint).to_have_attribute("data-kind", "command")
    await shot(page, tmp_path, f"workflow-command-typed-{viewport['width']}.png")
    await box.press("Enter")
    await expect(box).to_have_value("")
    started = page.locator("#messages .msg", has_text="the sea").first
    await expect(started.locator(".msg-workflow")).to_have_text("▶ started the workflow “Poem pipeline”")
    await expect(page.locator("#messages .msg.agent .msg-workflow").first).to_have_text("▶ workflow step 1")
    run = page.locator(".wf-run").first  # as a run started in the panel: its card asks at the approval step
    await expect(run).to_have_attribute("data-status", "paused", timeout=15000)
    await expect(hint).to_be_hidden()
    await shot(page, tmp_path, f"workflow-command-started-{viewport['width']}.png")
    rows = await store.runs_of(app.xj, (await store.of_channel(app.xj, ch["id"]))[0]["id"], 10)
    assert [(r["input"], r["status"]) for r in rows] == [("the sea", "paused")]
    messages = await app.xj.db.fetchall("SELECT content, agent_id FROM messages WHERE channel_id = ? ORDER BY seq",
                                        (ch["id"],))
    assert [(m["agent_id"], m["content"]) for m in messages][0] == (None, "the sea")
    assert "/poem-pipeline" not in [m["content"] for m in messages]
    await run.locator(".wf-approve").click()
    await expect(page.locator(".wf-run").first).to_have_attribute("data-status", "completed", timeout=15000)

    # a workflow made after the group was opened, its command pasted in one go
    owner = await auth.owner(app.xj.db)
    steps = store.check_steps(app.xj, [{"agentId": "novelist", "instruction": "{{input}}"}], {"novelist"})
    await store.create(app.xj, channel_id=ch["id"], name="Second one", steps=steps, stop_when=None,
                       creator=owner["id"])
    await box.fill("/Second-One the hills")
    await box.press("Enter")
    hills = page.locator("#messages .msg", has_text="the hills").first
    await expect(hills.locator(".msg-workflow")).to_have_text("▶ started the workflow “Second one”")
    await expect(box).to_have_value("")

    await box.press_sequentially("/")  # both now, the arrows move, Escape closes the list
    await expect(item).to_have_count(2)
    await box.press("ArrowDown")
    await expect(popup.locator(".command-item.active")).to_contain_text("/second-one")
    await box.press("Escape")
    await expect(popup).to_be_hidden()
    await expect(box).to_have_value("/")

    # a path or a name no workflow has is an ordinary message
    await box.fill("/etc/hosts is where")
    await expect(popup).to_be_hidden()
    await expect(hint).to_be_hidden()
    assert page.errors == []
    await page.context.close()


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_who_may_not_post_is_told_why_the_workflow_did_not_start(browser, site, viewport, tmp_path):  # noqa: F811
    app, base = site
    guest = await make_user(app, f"visitor{viewport['width']}", "guest")
    ch = await poem_group(app, f"访客 {viewport['width']}", guest=guest)
    page = await new_page(browser, base, lang="zh")
    await page.set_viewport_size(viewport)
    await log_in(page, base, password=PASSWORD, username=guest["username"])
    await page.goto(f"{base}/#/c/{ch['id']}")
    box = page.locator("#composer-input")
    await expect(box).to_be_visible()
    await box.press_sequentially("/")
    await expect(page.locator("#mention-popup .command-item")).to_have_count(1)
    # the guest loses the right to post while the page is open (the REST refusal comes back)
    await app.xj.db.execute("UPDATE channel_members SET can_write = 0 WHERE channel_id = ? AND member_id = ?",
                            (ch["id"], guest["id"]))
    await box.press("Tab")
    await box.press_sequentially("大海")
    hint = page.locator("#composer-hint")
    await expect(hint).to_contain_text("启动工作流")
    await box.press("Enter")
    await expect(hint).to_have_attribute("data-kind", "error")
    await expect(hint).to_contain_text("“Poem pipeline”没有启动:你只能阅读这个对话,不能发言")
    assert "[object Object]" not in await hint.inner_text()
    await expect(box).to_have_value("/poem-pipeline 大海")  # the text stays
    await shot(page, tmp_path, f"workflow-command-refused-{viewport['width']}.png")
    assert await store.active_runs(app.xj, ch["id"]) == []
    assert page.errors == []
    await page.context.close()
