"""Hardening: cross-site requests, bad input that must never be a 500, sizes."""
from __future__ import annotations

import asyncio

import pytest

from conftest import OWNER_PASSWORD, login


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


async def test_an_origin_listed_for_cors_passes_the_origin_check(tmp_path):
    from conftest import make_settings, running_app

    settings = make_settings(tmp_path, cors_origins="https://app.example", cors_credentials=True)
    async with running_app(settings) as app:
        c = app.test_client()
        await login(c)
        body = {"name": "x", "type": "group", "agentIds": []}
        ok = await c.post("/api/channels", json=body, headers={"Origin": "https://app.example",
                                                                "Sec-Fetch-Site": "cross-site"})
        assert ok.status_code == 201
        refused = await c.post("/api/channels", json=body, headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403


# ------------------------------------------------------------------ bad input is a 4xx with a code, never a 500

DEEP = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 1200 + "1" + "}" * 1200


def _raw(body: str):
    return {"data": body.encode("utf-8", "surrogatepass"), "headers": {"Content-Type": "application/json"}}


BAD_HTTP = [
    # (method, path, request kwargs, expected status, expected code)
    ("POST", "/api/login", _raw(DEEP), 400, "json_too_deep"),
    ("POST", "/api/messages", _raw('{"channelId": "x", "content": ' + DEEP + "}"), 400, "json_too_deep"),
    ("POST", "/api/channels", _raw(DEEP_OBJECT), 400, "json_too_deep"),
    ("POST", "/api/login", _raw('{"password": "\\ud800"}'), 400, "invalid_text"),
    ("POST", "/api/messages", _raw('{"channelId": "CH", "content": "hi \\ud800"}'), 400, "invalid_text"),
    ("POST", "/api/keys", _raw('{"name": "\\udfff"}'), 400, "invalid_text"),
    ("POST", "/api/invites", _raw('{"role": "member", "note": "\\ud800"}'), 400, "invalid_text"),
    ("POST", "/api/messages", _raw('{"channelId": "CH", "content": "a\\u0000b"}'), 400, "invalid_text"),
    ("POST", "/api/rag/query", _raw('{"agentId": "coder", "query": "\\u0000"}'), 400, "invalid_text"),
    ("POST", "/api/agents/coder/memories", _raw('{"content": "\\u0000"}'), 400, "invalid_text"),
    ("GET", "/api/agents/coder/memories?q=%00", {}, 400, "invalid_text"),
    ("GET", "/api/messages/search?q=a%00b", {}, 400, "invalid_text"),
    ("POST", "/api/messages", _raw('{"channelId": ["x"], "content": 5}'), 400, "validation_error"),
]


@pytest.mark.parametrize("method, path, kwargs, status, code", BAD_HTTP, ids=[f"{m} {p} {c}" for m, p, _, _, c in
                                                                         [(b[0], b[1], 0, 0, b[4]) for b in BAD_HTTP]])
async def test_bad_http_input_is_a_4xx_with_a_code(app, owner, method, path, kwargs, status, code):
    channel = (await (await owner.post("/api/channels", json={"name": "c", "type": "group", "agentIds": []})).get_json())
    if "data" in kwargs:
        kwargs = {**kwargs, "data": kwargs["data"].replace(b'"CH"', f'"{channel["id"]}"'.encode())}
    resp = await owner.open(path, method=method, **kwargs)
    body = await resp.get_json()
    assert (resp.status_code, body.get("code")) == (status, code), body


async def test_a_nul_in_a_document_is_dropped_not_an_index_error(tmp_path):
    from conftest import make_settings, running_app
    from test_rag import ingest

    async with running_app(make_settings(tmp_path, embedder="hash")) as app:
        c = app.test_client()
        await login(c)
        doc = await ingest(c, "coder", "nul.txt", b"gamma delta. " * 500 + b"alpha\x00\x00 beta " * 50 + b"\x00")
        assert doc["status"] == "ready", doc
        results = (await (await c.post("/api/rag/query", json={"agentId": "coder", "query": "beta"})).get_json())
        assert results["results"] and "\x00" not in results["results"][0]["text"]


BAD_FRAMES = [
    # (raw frame, expected error code)
    (b"", "invalid_json"),                                     # an empty binary frame
    ("[" * 5000 + "]" * 5000, "json_too_deep"),
    ('{"type": "ping", "data": ' + "[" * 900 + "]" * 900 + "}", "json_too_deep"),
    ('{"type": "subscribe", "data": {"channelId": "\\ud800"}}', "invalid_text"),
    ('{"type": "stop", "data": {"messageId": ["x"]}}', "invalid_frame"),
    ('{"type": "stop", "data": {"channelId": {"a": 1}}}', "invalid_frame"),
    ('{"type": "subscribe", "data": {"channelId": 5}}', "invalid_frame"),
    ('{"type": 7}', "invalid_frame"),
    ("not json", "invalid_json"),
    (b"\xff\xfe\x00binary", "invalid_json"),
]


@pytest.mark.parametrize("raw, code", BAD_FRAMES, ids=[c + str(i) for i, (_, c) in enumerate(BAD_FRAMES)])
async def test_bad_websocket_frames_get_an_error_frame_and_the_socket_lives(server, raw, code):
    import json as _json

    import httpx
    from websockets.asyncio.client import connect

    app, base = server
    async with httpx.AsyncClient(base_url=base) as http:
        await http.post("/api/login", json={"password": OWNER_PASSWORD})
        token = http.cookies.get("session")
    async with connect(base.replace("http://", "ws://") + "/ws") as ws:
        await ws.send(_json.dumps({"type": "auth", "token": token}))
        assert _json.loads(await ws.recv())["type"] == "auth_ok"
        await ws.send(raw)
        frame = _json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["type"] == "error" and frame["data"]["code"] == code, frame
        await ws.send(_json.dumps({"type": "ping"}))
        assert _json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"


# ------------------------------------------------------------------ outgoing requests: SSRF, key leaks


@pytest.mark.parametrize("host, kind", [
    ("127.0.0.1", "loopback"), ("2130706433", "loopback"), ("0x7f000001", "loopback"), ("127.1", "loopback"),
    ("0177.0.0.1", "loopback"), ("[::ffff:127.0.0.1]", "loopback"), ("::1", "loopback"), ("[::1]", "loopback"),
    ("10.0.0.7", "private"), ("0xa000007", "private"), ("192.168.1.1", "private"), ("fd12::1", "private"),
    ("169.254.169.254", "metadata"), ("[::ffff:169.254.169.254]", "metadata"), ("169.254.3.4", "link_local"),
    ("0.0.0.0", "loopback"), ("240.0.0.1", "reserved"), ("8.8.8.8", "public"), ("2001:4860:4860::8888", "public"),
])
def test_addresses_are_normalised_then_classified(host, kind):
    from xiajiao.addresses import classify, parse_address

    assert classify(parse_address(host)) == kind


def test_names_are_not_addresses():
    from xiajiao.addresses import parse_address

    assert parse_address("api.openai.com") is None and parse_address("localhost") is None


async def provider_with(owner, base_url: str):
    return await owner.put("/api/settings", json={"providers": [
        {"id": "p1", "kind": "openai", "baseUrl": base_url, "apiKey": "sk-secret-key-123456", "models": ["m"]}]})


@pytest.mark.parametrize("url", ["http://2130706433:9/v1", "http://0x7f000001:9/v1", "http://127.1:9/v1",
                                 "http://[::ffff:127.0.0.1]:9/v1", "http://localhost:9/v1",
                                 "http://169.254.169.254/latest", "http://10.1.2.3/v1"])
async def test_the_provider_test_refuses_loopback_private_and_metadata(app, owner, url):
    assert (await provider_with(owner, url)).status_code == 200
    resp = await owner.post("/api/providers/p1/test", json={})
    assert (resp.status_code, (await resp.get_json())["code"]) == (403, "address_not_allowed")


async def test_the_setting_lets_a_local_model_server_be_tested_but_never_metadata(tmp_path, fake_llm):
    from conftest import make_settings, running_app

    async with running_app(make_settings(tmp_path, allow_private_provider_urls=True)) as app:
        c = app.test_client()
        await login(c)
        await provider_with(c, fake_llm.base_url)
        fake_llm.script(text="ok")
        assert (await (await c.post("/api/providers/p1/test", json={})).get_json())["ok"] is True
        await provider_with(c, "http://[::ffff:169.254.169.254]/v1")
        assert (await c.post("/api/providers/p1/test", json={})).status_code == 403


@pytest.mark.parametrize("url", ["http://x@evil.example/v1", "http://user:pw@api.example/v1",
                                 "https://sk@127.0.0.1/v1"])
async def test_base_urls_with_userinfo_are_refused(app, owner, url):
    resp = await provider_with(owner, url)
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, "invalid_base_url")


async def test_members_never_see_a_providers_error_verbatim(tmp_path, fake_llm):
    from chat_helpers import user_client
    from conftest import llm_settings, make_channel, running_app, user_says, Frames
    from fake_llm import Reply

    async with running_app(llm_settings(tmp_path, fake_llm, provider_retries=0)) as app:
        fake_llm.script(Reply(status=400, error_message="internal banner: secret-token-XYZ"))
        ch = await make_channel(app, ["coder"], type="dm")
        frames = Frames(app, ch["id"])
        await user_says(app, ch, "hello")
        await frames.wait_for("stream_end")
        owner = app.test_client()
        await login(owner)
        member, _ = await user_client(app, "mem")
        seen = {}
        for who, c in (("owner", owner), ("member", member)):
            providers = (await (await c.get("/api/providers")).get_json())["providers"]
            seen[who] = " ".join(str(p["health"]["lastError"]) for p in providers)
        assert "secret-token-XYZ" in seen["owner"]
        assert "secret-token-XYZ" not in seen["member"]
        assert seen["member"].split()[0] == "provider_http_error", seen  # the code, nothing else


# ------------------------------------------------------------------ sizes


async def test_message_metadata_is_limited_in_bytes_and_keys(tmp_path):
    from conftest import make_settings, running_app

    async with running_app(make_settings(tmp_path, max_metadata_bytes=2000, max_metadata_keys=20)) as app:
        c = app.test_client()
        await login(c)
        ch = (await (await c.post("/api/channels", json={"name": "m", "type": "group", "agentIds": []})).get_json())["id"]
        for metadata in ({"blob": "x" * 3000}, {f"k{i}": i for i in range(21)}, {"a": [{"b": i} for i in range(25)]}):
            r = await c.post("/api/messages", json={"channelId": ch, "content": "hi", "metadata": metadata})
            assert (r.status_code, (await r.get_json())["code"]) == (413, "metadata_too_large")
        r = await c.post("/api/messages", json={"channelId": ch, "content": "hi", "metadata": {"k": "v"}})
        assert r.status_code == 200


async def test_display_names_are_limited_on_invite_accept_and_user_create(app, owner):
    invite = await (await owner.post("/api/invites", json={"role": "member"})).get_json()
    token = invite.get("token") or invite["url"].rsplit("/", 1)[-1]
    r = await app.test_client().post("/api/invites/accept", json={
        "token": token, "username": "longname", "password": "a-long-pass-phrase", "displayName": "x" * 100_000})
    assert (r.status_code, (await r.get_json())["code"]) == (400, "invalid_display_name")
    r = await owner.post("/api/users", json={"username": "u2", "password": "a-long-pass-phrase", "displayName": "y" * 65})
    assert (r.status_code, (await r.get_json())["code"]) == (400, "invalid_display_name")


@pytest.mark.parametrize("password", ["12345678", "password", "qwertyuiop", "11111111", "iloveyou"])
async def test_common_passwords_are_refused(owner, password):
    r = await owner.post("/api/users", json={"username": "u3", "password": password})
    assert (r.status_code, (await r.get_json())["code"]) == (400, "weak_password")


# ------------------------------------------------------------------ provider edge cases and reply caps


async def one_turn(app, fake_llm, *replies):
    from conftest import Frames, make_channel, user_says

    ch = await make_channel(app, ["coder"], type="dm")
    frames = Frames(app, ch["id"])
    if replies:
        fake_llm.script(*replies)
    msg, _ = await user_says(app, ch, "hello")
    end = await frames.wait_for("stream_end", timeout=30)
    row = await app.xj.db.fetchone("SELECT content, status, metadata FROM messages WHERE id = ?", (end["messageId"],))
    import json as _json

    return row["status"], (_json.loads(row["metadata"]).get("error") or {}).get("code"), row["content"]


async def test_a_long_retry_after_fails_at_once_with_the_reason(tmp_path, fake_llm):
    import time

    from conftest import llm_settings, running_app
    from fake_llm import Reply

    async with running_app(llm_settings(tmp_path, fake_llm, max_retry_after=5)) as app:
        t0 = time.monotonic()
        status, code, _ = await one_turn(app, fake_llm, Reply(status=429, retry_after=3600))
        assert (status, code) == ("error", "provider_retry_after_too_long")
        assert time.monotonic() - t0 < 10


async def test_a_200_that_is_not_an_event_stream_says_so(tmp_path, fake_llm):
    import http.server
    import threading

    from conftest import llm_settings, running_app

    class Html(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>a login page</html>")

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        settings = llm_settings(tmp_path, fake_llm, openai_base_url=f"http://127.0.0.1:{other.server_address[1]}/v1")
        async with running_app(settings) as app:
            status, code, _ = await one_turn(app, fake_llm)
            assert (status, code) == ("error", "not_a_stream")
    finally:
        other.shutdown()


@pytest.mark.parametrize("settings_overrides, replies, code, max_len", [
    ({}, [{"text": ""}], "empty_reply", 0),
    ({"tool_max_rounds": 2}, [{"tool": '{"broken'}] * 3, "empty_reply", 0),
    ({"max_reply_chars": 1000}, [{"text": "x" * 2_000_000}], "reply_too_long", 1000),
    ({"max_reply_seconds": 1.0}, [{"text": "a b c d e f", "chunks": 6, "hang_after": 2}], "reply_timeout", 100),
])
async def test_replies_that_say_nothing_or_never_end_are_marked_failed(tmp_path, fake_llm, settings_overrides,
                                                                       replies, code, max_len):
    from conftest import llm_settings, running_app
    from fake_llm import Call, Reply

    script = [Reply(tool_calls=[Call("memory_search", r["tool"], id=f"t{i}")]) if "tool" in r else Reply(**r)
              for i, r in enumerate(replies)]
    async with running_app(llm_settings(tmp_path, fake_llm, **settings_overrides)) as app:
        await app.xj.engine.agents.update("coder", {"tools": ["memory_search"]})
        status, got, content = await one_turn(app, fake_llm, *script)
        assert (status, got) == ("error", code)
        assert len(content) <= max_len
