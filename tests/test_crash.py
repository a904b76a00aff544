"""Crash safety: a real server process killed (SIGKILL) mid-stream leaves the partial reply stored,
marked interrupted after the restart, and the user's message intact."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import httpx

from fake_llm import Reply
from xiajiao.db import Database
from conftest import OWNER_PASSWORD, ROOT, llm_settings, make_channel, running_app, server_env, wait_http


async def test_sigkill_mid_stream_leaves_the_partial_reply_marked_interrupted(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:  # first start: migrations, owner, default agents, a group with a chain
        ch = await make_channel(app, ["novelist"], chain=["novelist"])
    story = "".join(f"word{i} " for i in range(100))
    fake_llm.script(Reply(text=story, chunks=100, delay=0.05))
    base = f"http://127.0.0.1:{settings.port}"
    proc = subprocess.Popen([sys.executable, "-m", "xiajiao.cli", "serve"], cwd=ROOT, env=server_env(settings),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_http(base, proc)
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.post("/api/login", json={"password": OWNER_PASSWORD})).status_code == 200
            resp = await client.post("/api/chains", json={"channelId": ch["id"], "input": "tell a long story"})
            assert resp.status_code == 201
        db = Database(settings.data_dir / "xiajiao.db", skip_migrations=True)
        await db.open()
        try:
            partial = None
            for _ in range(400):  # until the running reply's partial text has been saved at least once
                partial = await db.fetchone("SELECT id, content FROM messages WHERE status = 'streaming'")
                if partial and partial["content"]:
                    break
                await asyncio.sleep(0.02)
            assert partial and partial["content"].startswith("word0 ")
        finally:
            await db.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    async with running_app(settings) as app:
        rows = await app.xj.db.fetchall("SELECT id, user_id, agent_id, content, status FROM messages "
                                        "WHERE channel_id = ? ORDER BY seq", (ch["id"],))
        hits = await app.xj.db.fetchval("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'word0'")
    assert [(r["agent_id"], r["status"]) for r in rows] == [(None, "done"), ("novelist", "interrupted")]
    assert rows[0]["content"] == "tell a long story" and rows[0]["user_id"]
    assert rows[1]["id"] == partial["id"]
    assert rows[1]["content"].startswith(partial["content"]) and story.startswith(rows[1]["content"])
    assert len(rows[1]["content"]) < len(story)
    assert hits == 1  # the partial reply is searchable


async def test_a_graceful_shutdown_keeps_the_partial_reply_marked_interrupted(tmp_path, fake_llm):
    from conftest import Frames, user_says

    settings = llm_settings(tmp_path, fake_llm)
    async with running_app(settings) as app:
        ch = await make_channel(app, ["novelist"], type="dm")
        frames = Frames(app, ch["id"])
        fake_llm.script(Reply(text="abcdefgh", chunks=4, hang_after=2))
        msg, _ = await user_says(app, ch, "story please")
        chunk = await frames.wait_for("stream_chunk", lambda d: len(frames.of("stream_chunk")) == 2)
    async with running_app(settings) as app:
        row = await app.xj.db.fetchone("SELECT content, status FROM messages WHERE id = ?", (chunk["messageId"],))
        asked = await app.xj.db.fetchone("SELECT content, status FROM messages WHERE id = ?", (msg["id"],))
    assert row == {"content": "abcd", "status": "interrupted"}
    assert asked == {"content": "story please", "status": "done"}
