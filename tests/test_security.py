"""Hardening: cross-site requests, bad input that must never be a 500, sizes."""
from __future__ import annotations

import pytest

from conftest import OWNER_PASSWORD


# ------------------------------------------------------------------ CSRF


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost:9999"},          # another port of the same host is another origin
    {"Origin": "null"},                          # sandboxed frames, file: pages
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost"},  # a sibling site, even with a matching Origin
])
async def test_a_state_changing_request_from_another_origin_is_refused(app, owner, headers):
    for method, path, body in [("POST", "/api/logout", None), ("POST", "/api/channels", {"name": "x"}),
                               ("PUT", "/api/me", {"displayName": "x"}), ("POST", "/api/login",
                                                                          {"password": OWNER_PASSWORD})]:
        resp = await owner.open(path, method=method, json=body, headers=headers)
        assert (resp.status_code, (await resp.get_json()).get("code")) == (403, "cross_origin_request"), (path, await resp.get_data(as_text=True))
    assert (await owner.get("/api/me", headers=headers)).status_code == 200  # reading is not state-changing
    assert (await owner.get("/api/me")).status_code == 200  # still logged in


@pytest.mark.parametrize("headers", [
    {"Origin": "http://localhost"},                     # our own page (the test client's host)
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},
    {},                                                 # not a browser (curl, scripts)
])
async def test_our_own_pages_and_non_browsers_pass(app, owner, headers):
    resp = await owner.post("/api/channels", json={"name": "ours", "type": "group", "agentIds": []}, headers=headers)
    assert resp.status_code == 201, await resp.get_data(as_text=True)


async def test_api_keys_are_unaffected_by_the_origin_check(app, owner):
    key = (await (await owner.post("/api/keys", json={"name": "ci"})).get_json())["secret"]
    c = app.test_client()
    resp = await c.post("/api/channels", json={"name": "k", "type": "group", "agentIds": []},
                        headers={"Authorization": f"Bearer {key}", "Origin": "http://evil.example"})
    assert resp.status_code == 201
