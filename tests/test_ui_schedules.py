"""The Schedules view in a real Chromium: create, see the next run, run now and see the reply and
the last run, pause, delete; a reload keeps the view; a guest has no Schedules button; the phone."""
from __future__ import annotations

import pytest
import pytest_asyncio
from playwright.async_api import expect

from chat_helpers import PASSWORD
from conftest import live_server, make_settings
from test_ui_browser import browser, log_in, new_page  # noqa: F401  (browser is a fixture)
from xiajiao import auth, chat

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module")
async def site(tmp_path):
    async with live_server(make_settings(tmp_path, demo_delay=0.0)) as (app, base):
        owner = await auth.owner(app.xj.db)
        ch = await chat.create_channel(app.xj.db, name="晨会", type="group", creator_id=owner["id"],
                                       agent_ids=["butler"], user_ids=[], default_agent_id="butler")
        await auth.create_user(app.xj.db, username="gwen", password=PASSWORD, role="guest")
        yield app, base, ch


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 860}, {"width": 390, "height": 844}])
async def test_create_run_pause_and_delete_a_schedule(browser, site, viewport, tmp_path):  # noqa: F811
    app, base, ch = site
    page = await new_page(browser, base)
    await page.set_viewport_size(viewport)
    await log_in(page, base)
    await page.click("#btn-schedules")
    await expect(page.locator("#no-schedules")).to_be_visible()
    await page.select_option("#sched-channel", ch["id"])
    await page.fill("#sched-prompt", "Summarise yesterday")
    await page.fill("#sched-cron", "30 8 * * 1-5")
    await page.fill("#sched-tz", "Asia/Shanghai")
    await page.click("#sched-save")
    item = page.locator(".schedule")
    await expect(item).to_have_count(1)
    await expect(item.locator(".schedule-when")).to_have_text("30 8 * * 1-5 · Asia/Shanghai")
    await expect(item.locator(".next-run")).not_to_contain_text("never")
    await expect(item.locator(".last-run")).to_contain_text("never")

    # a bad cron keeps the draft and says why
    await page.fill("#sched-prompt", "Another")
    await page.fill("#sched-cron", "99 * * * *")
    await page.click("#sched-save")
    await expect(page.locator("#sched-error")).to_be_visible()
    assert await page.input_value("#sched-prompt") == "Another"

    # reload in the middle of things: the view comes back with the schedule
    await page.reload()
    await page.wait_for_selector("body[data-ready=app]")
    await expect(page.locator(".schedule")).to_have_count(1)

    await page.click(".schedule .act-run")
    await expect(page.locator(".schedule .last-run .pill")).to_have_text("done", timeout=15000)
    rows = await app.xj.db.fetchall("SELECT content, agent_id FROM messages WHERE channel_id = ? ORDER BY seq",
                                    (ch["id"],))
    assert rows[-2]["content"] == "Summarise yesterday" and rows[-1]["agent_id"] == "butler" and rows[-1]["content"]

    await page.click(".schedule .act-toggle")
    await expect(page.locator(".schedule .next-run")).to_contain_text("paused")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"]
    await page.screenshot(path=str(tmp_path / f"schedules-{viewport['width']}.png"))
    page.on("dialog", lambda d: d.accept())
    await page.click(".schedule .act-delete")
    await expect(page.locator("#no-schedules")).to_be_visible()
    assert [e for e in page.errors if not e.startswith("dialog")] == []
    await page.context.close()


async def test_a_guest_has_no_schedules(browser, site):  # noqa: F811
    app, base, ch = site
    page = await new_page(browser, base)
    await log_in(page, base, PASSWORD, "gwen")
    assert not await page.is_visible("#btn-schedules")
    resp = await page.request.get(base + "/api/schedules")
    assert resp.status == 403
    await page.context.close()
