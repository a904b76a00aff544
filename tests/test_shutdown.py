"""A quiet stop: SIGTERM to a real server with open sockets and a reply streaming ends without a
traceback, sockets closed with 1001 (going away), the partial reply kept."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from chat_helpers import recv_until, send
from conftest import OWNER_PASSWORD, ROOT, free_port
from test_sessions import closed_with

NOISE = ("Traceback", "Task was destroyed but it is pending", "Cannot change state of finished",
         "CancelledError", "Exception in callback", "was never awaited")


async def _wait_until_up(base: str, proc) -> None:
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(600):
            if proc.returncode is not None:
                raise AssertionError(f"the server exited: {(await proc.stderr.read()).decode()}")
            try:
                if (await http.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the server never answered /health")


async def test_sigterm_stops_the_server_quietly(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "XIAJIAO_DATA_DIR": str(tmp_path / "data"), "XIAJIAO_PORT": str(port),
           "XIAJIAO_OWNER_PASSWORD": OWNER_PASSWORD, "XIAJIAO_LOAD_ENTRYPOINT_PLUGINS": "false",
           "XIAJIAO_DEMO_DELAY": "0.2", "XIAJIAO_ACCESS_LOG": "false", "PYTHONUNBUFFERED": "1"}
    for key in [k for k in env if k.startswith("XIAJIAO_") and k.endswith(("_API_KEY", "_BASE_URL"))]:
        del env[key]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "xiajiao.cli", "serve", cwd=str(ROOT), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_up(base, proc)
        async with httpx.AsyncClient(base_url=base) as http:
            await http.post("/api/login", json={"password": OWNER_PASSWORD})
            token = http.cookies["session"]
            agents = (await http.get("/api/agents")).json()["agents"]
            channel = (await http.post("/api/channels", json={"name": "dm", "type": "dm",
                                                               "agentIds": [agents[0]["id"]]})).json()["id"]
            idle = await connect(base.replace("http", "ws") + "/ws")
            watching = await connect(base.replace("http", "ws") + "/ws")
            for ws in (idle, watching):
                await send(ws, {"type": "auth", "token": token})
                await recv_until(ws, "auth_ok")
            await send(watching, {"type": "subscribe", "data": {"channelId": channel}})
            await recv_until(watching, "subscribed")
            await http.post("/api/messages", json={"channelId": channel, "content": "tell me a long story"})
            await recv_until(watching, "stream_chunk", timeout=20)
            proc.send_signal(signal.SIGTERM)
            codes = [await closed_with(idle), await closed_with(watching)]
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err
    assert [n for n in NOISE if n in err] == [], err
    assert codes == [1001, 1001]
    from xiajiao.app import MIGRATIONS
    from xiajiao.db import Database, migrations_from_dir

    db = await Database(tmp_path / "data" / "xiajiao.db", migrations=migrations_from_dir(MIGRATIONS)).open()
    reply = await db.fetchone("SELECT content, status FROM messages WHERE agent_id IS NOT NULL")
    await db.close()
    assert reply["status"] == "interrupted" and reply["content"]  # what was said is kept
