"""Settings › System in a real Chromium: the owner sees the server's state and makes a backup;
an admin has no System tab. Desktop and a 390 px phone."""
from __future__ import annotations

import pytest
import pytest_asyncio
from playwright.async_api import expect

from chat_helpers import PASSWORD
from conftest import live_server, make_settings
from test_ui_browser import VIEWPORTS, browser, log_in, new_page, owner_page  # noqa: F401  (browser is a fixture)
from xiajiao import auth

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module")
async def site(tmp_path):
    async with live_server(make_settings(tmp_path, demo_delay=0.0)) as (app, base):
        await auth.create_user(app.xj.db, username="ada", password=PASSWORD, role="admin")
        yield app, base


@pytest.mark.parametrize("viewport", VIEWPORTS)
async def test_the_owner_sees_the_system_and_backs_up(browser, site, viewport, tmp_path):  # noqa: F811
    app, base = site
    page = await owner_page(browser, base, viewport)
    await page.click("#btn-settings")
    await page.click(".tab[data-tab=system]")
    facts = page.locator("#system-facts")
    await expect(facts).to_contain_text(app.xj.version)
    await expect(page.locator("#system-providers")).to_contain_text("demo")
    await expect(page.locator("#backup-list")).to_have_text("No backups yet.")
    await page.click("#backup-now")
    link = page.locator("#backup-list a")
    await expect(link).to_have_count(1)
    name = await link.text_content()
    assert (app.xj.backups.folder / name).is_file()
    resp = await page.request.get(base + await link.get_attribute("href"))
    assert resp.status == 200 and (await resp.body())[:2] == b"\x1f\x8b"
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"]  # nothing pushes the page wider than the screen
    await page.screenshot(path=str(tmp_path / f"system-{viewport['width']}.png"))
    assert page.errors == []
    await page.context.close()


async def test_an_admin_has_no_system_tab(browser, site):  # noqa: F811
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base, PASSWORD, "ada")
    await page.click("#btn-settings")
    await expect(page.locator(".tab[data-tab=users]")).to_be_visible()
    assert await page.locator(".tab[data-tab=system]").count() == 0
    resp = await page.request.get(base + "/api/system")
    assert resp.status == 403
    await page.context.close()
