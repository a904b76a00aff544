"""Workflows in a real Chromium: a group's workflow is created in the Workflows panel (from the group
settings too), started with an input, waits at its approval step with the button in the channel,
and completes after the click; on a desktop and a phone."""
from __future__ import annotations

import pytest
import pytest_asyncio
from playwright.async_api import expect

from conftest import live_server, make_settings
from test_ui_browser import SHOTS_DIR, VIEWPORTS, browser, owner_page  # noqa: F401  (browser is a fixture)
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
