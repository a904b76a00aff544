"""Settings › MCP servers in a real Chromium: the owner adds a stdio server written with the SDK,
sees it ready with its tools (secrets masked), marks a tool as needing approval, and gives a tool to
an agent; a server that cannot start shows why. A desktop and a phone."""
from __future__ import annotations

import sys

import pytest
from playwright.async_api import expect

from conftest import live_server, make_settings
from test_mcp_client import STDIO_MAIN, TOOLS
from test_ui_browser import SHOTS_DIR, VIEWPORTS, browser, owner_page  # noqa: F401  (browser is a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=["desktop", "phone"])
async def test_add_a_server_see_its_tools_and_mark_one_for_approval(browser, tmp_path, viewport):  # noqa: F811
    script = tmp_path / "demo_server.py"
    script.write_text(TOOLS + STDIO_MAIN, encoding="utf-8")
    async with live_server(make_settings(tmp_path, demo_delay=0.0)) as (app, base):
        page = await owner_page(browser, base, viewport)
        await page.click("#btn-settings")
        await page.click(".tab[data-tab=mcp]")
        await expect(page.locator("#no-mcp-servers")).to_be_visible()
        await page.fill("#mcp-id", "demo")
        await page.fill("#mcp-name", "演示 Demo")
        await page.select_option("#mcp-transport", "stdio")
        await page.fill("#mcp-command", sys.executable)
        await page.fill("#mcp-args", str(script))
        await page.fill("#mcp-env", "GREETING=你好\nAPI_TOKEN=secret-token-123456")
        await page.click("#mcp-add")
        card = page.locator(".mcp-server[data-id=demo]")
        await expect(card).to_be_visible()
        # it starts in the background; the refresh button waits for it and lists its tools
        await card.locator(".act-refresh").click()
        card = page.locator(".mcp-server[data-id=demo][data-status=ready]")
        await expect(card).to_be_visible(timeout=60000)
        await expect(card.locator(".mcp-status")).to_have_text("ready")
        assert "secret-token-123456" not in await page.content()
        await card.locator(".mcp-tools summary").click()
        await expect(card.locator(".mcp-tool[data-tool=add] code")).to_have_text("mcp_demo_add")
        await expect(card.locator(".mcp-tool[data-tool=odd] .skipped-reason")).to_be_visible()
        await card.locator(".mcp-tool[data-tool=crash] .tool-approval").check()
        await expect(page.locator(".toast").last).to_have_text("Saved")
        await expect(page.locator(".mcp-server[data-id=demo] .mcp-tool[data-tool=crash] .tool-approval")).to_be_checked()
        assert app.xj.tools.get("mcp_demo_crash").approval is True
        await page.locator(".mcp-server[data-id=demo] .mcp-tools summary").click()
        shot = (SHOTS_DIR or tmp_path) / f"mcp-servers-{viewport['width']}.png"
        await page.screenshot(path=str(shot), full_page=True)

        # one that cannot start says why
        await page.fill("#mcp-id", "broken")
        await page.fill("#mcp-command", str(tmp_path / "no-such-program"))
        await page.fill("#mcp-args", "")
        await page.fill("#mcp-env", "")
        await page.click("#mcp-add")
        await page.locator(".mcp-server[data-id=broken] .act-refresh").click()
        bad = page.locator(".mcp-server[data-id=broken][data-status=unhealthy]")
        await expect(bad.locator(".mcp-error")).to_contain_text("not found", timeout=60000)
        await page.context.close()
