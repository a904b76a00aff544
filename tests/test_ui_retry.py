"""The web app's fetch wrapper waits out a 429 (Retry-After) instead of failing, in real Chromium."""
from __future__ import annotations

import os
import shutil

import pytest

from conftest import live_server, make_settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

CALLS = """async (n) => {
  const api = await import("/static/js/api.js");
  const out = [];
  for (let i = 0; i < n; i++) {
    try { await api.get("/api/me"); out.push(200); } catch (e) { out.push(e.status); }
  }
  return out;
}"""


async def test_the_web_app_retries_a_429_after_retry_after(tmp_path):
    from playwright.async_api import async_playwright

    settings = make_settings(tmp_path, rate_limit_per_minute=60, rate_limit_burst=2)  # one request a second
    async with live_server(settings) as (app, base), async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await browser.new_page()
        seen = []
        page.on("response", lambda r: seen.append(r.status) if r.url.endswith("/api/me") else None)
        await page.goto(base + "/login")
        statuses = await page.evaluate(CALLS, 5)
        await browser.close()
    assert statuses == [401] * 5  # anonymous: every call ends with the real answer, none with 429
    assert 429 in seen  # the server did refuse some, and the wrapper waited and asked again
