"""The load generator's side of the chat protocol: agents, channels, WebSockets."""
from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import websockets

from .corpus import TextMaker
from .harness import Server, realistic

# what a user's agent has in the realistic profile (docs/benchmarks.md)
TOOLS = ["memory_write", "memory_search", "rag_query"]
SEED_MEMORIES = 5
SEED_KB_BYTES = 8 * 1024


async def create_agent(client, name: str, model: str | None = "fake-model", *, seed: bool | None = None) -> str:
    """An agent made through the API; in the realistic profile with the memory and knowledge tools and its
    knowledge base switched on, and (``seed``, default: realistic) a few memories and a small knowledge base."""
    body = {"name": name, "soul": "You are a benchmark agent. Answer briefly."}
    if model:
        body["model"] = model
    if realistic():
        body.update(tools=TOOLS, knowledge=True)
    r = await client.post("/api/agents", json=body)
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /api/agents: {r.status_code} {r.text}")
    body = r.json()
    agent_id = body.get("id") or body["agent"]["id"]
    if realistic() if seed is None else seed:
        await seed_agent(client, agent_id)
    return agent_id


async def seed_agent(client, agent_id: str) -> None:
    """A few memories and a small knowledge base (one document, indexed before returning)."""
    text = TextMaker(seed=len(agent_id))
    for i in range(SEED_MEMORIES):
        r = await client.post(f"/api/agents/{agent_id}/memories",
                              json={"content": f"The user prefers {text.message()[:200]} (fact {i})"})
        if r.status_code not in (200, 201):
            raise RuntimeError(f"memory write: {r.status_code} {r.text}")
    await upload_document(client, agent_id, "handbook.md", text.document(SEED_KB_BYTES))


async def upload_document(client, agent_id: str, name: str, text: str, *, wait: bool = True) -> dict:
    """Upload a document to the agent's knowledge base; with ``wait``, poll until it is indexed.

    Returns the document with ``seconds`` (upload → ready) and ``bytes``.
    """
    data = text.encode("utf-8")
    t0 = time.perf_counter()
    r = await client.post("/api/rag/upload", data={"agentId": agent_id},
                          files={"file": (name, data, "text/markdown")})
    if r.status_code not in (200, 201, 202):
        raise RuntimeError(f"upload: {r.status_code} {r.text}")
    doc = r.json()["document"]
    while wait:
        d = await client.get(f"/api/rag/documents/{doc['id']}", params={"agentId": agent_id})
        d.raise_for_status()
        doc = d.json()["document"]
        if doc["status"] in ("ready", "failed"):
            if doc["status"] != "ready":
                raise RuntimeError(f"indexing failed: {doc}")
            break
        await asyncio.sleep(0.01)
    return {**doc, "seconds": time.perf_counter() - t0, "bytes": len(data)}


async def create_channel(client, name: str, *, type: str = "dm", agent_ids: list[str] = ()) -> str:
    r = await client.post("/api/channels", json={"name": name, "type": type, "agentIds": list(agent_ids)})
    if r.status_code not in (200, 201):
        raise RuntimeError(f"POST /api/channels: {r.status_code} {r.text}")
    return r.json()["id"]


async def post(client, channel_id: str, content: str) -> str:
    r = await client.post("/api/messages", json={"channelId": channel_id, "content": content})
    if r.status_code != 200:
        raise RuntimeError(f"POST /api/messages: {r.status_code} {r.text}")
    return r.json()["id"]


class Socket:
    """One authenticated WebSocket; frames are timestamped on arrival and handed to waiters.

    Stream chunks are only counted (not parsed) unless someone waits for them, so the load
    generator spends little CPU per frame.
    """

    def __init__(self, server: Server):
        self.server = server
        self.ws = None
        self.reader: asyncio.Task | None = None
        self.waiters: dict[tuple[str, str], list[asyncio.Future]] = defaultdict(list)  # (type, channel) -> futures
        self.frames = 0

    async def connect(self) -> "Socket":
        self.ws = await websockets.connect(self.server.ws_url, max_size=None, compression=None, ping_interval=None,
                                           additional_headers={"Cookie": f"session={self.server.token}"})
        await self.ws.send(json.dumps({"type": "auth", "token": self.server.token}))
        while True:
            frame = json.loads(await self.ws.recv())
            if frame["type"] == "auth_ok":
                break
            if frame["type"] == "error":
                raise RuntimeError(f"ws auth failed: {frame}")
        self.reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def subscribe(self, channel_id: str) -> None:
        fut = self.expect("subscribed", channel_id)
        await self.ws.send(json.dumps({"type": "subscribe", "data": {"channelId": channel_id}}))
        await asyncio.wait_for(fut, 30)

    def expect(self, type_: str, channel_id: str) -> asyncio.Future:
        """A future resolved with ``(arrival time, frame)`` by the next such frame of that channel."""
        fut = asyncio.get_running_loop().create_future()
        self.waiters[(type_, channel_id)].append(fut)
        return fut

    async def _read(self) -> None:
        try:
            await self._dispatch()
        except websockets.ConnectionClosed:
            for queue in self.waiters.values():
                for fut in queue:
                    if not fut.done():
                        fut.set_exception(ConnectionError("websocket closed"))

    async def _dispatch(self) -> None:
        waiters = self.waiters
        async for raw in self.ws:
            t = time.perf_counter()
            self.frames += 1
            # cheap type sniffing: the hub encodes frames as {"type":"…",…}
            type_ = raw[9:raw.index('"', 9)] if raw.startswith('{"type":"') else None
            if not any(k[0] == type_ for k in waiters):
                continue
            frame = json.loads(raw)
            cid = frame.get("channelId") or (frame.get("data") or {}).get("channelId")
            queue = waiters.get((type_, cid))
            while queue:
                fut = queue.pop(0)
                if not fut.done():
                    fut.set_result((t, frame))
                    break
            if queue is not None and not queue:
                del waiters[(type_, cid)]

    async def close(self) -> None:
        if self.reader:
            self.reader.cancel()
        if self.ws:
            await self.ws.close()
