"""Indexing a knowledge base: interactive work first, percent and time left, resumed after a restart."""
from __future__ import annotations

import asyncio
import io

from conftest import login, make_settings, running_app
from test_memory import add_agent
from xiajiao import hookimpl


class Gated:
    """A test embedder whose document batches (``kind="passage"``, several texts) wait for ``bulk_gate``
    and whose questions wait for ``query_gate``; it records every call in order."""

    name = "gated"
    dim = 8

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []  # (kind, number of texts), in the order they started
        self.running: list[str] = []  # kinds of the calls in progress
        self.bulk_gate = asyncio.Event()
        self.query_gate = asyncio.Event()
        self.bulk_gate.set()
        self.query_gate.set()
        self.free_batches: int | None = None  # when set, only this many document batches pass the gate unasked

    async def embed(self, texts, *, kind="passage"):
        bulk = kind == "passage" and len(texts) > 1
        self.calls.append((kind, len(texts)))
        self.running.append(kind)
        try:
            if bulk and self.free_batches is not None and self.bulk_calls() > self.free_batches:
                self.bulk_gate.clear()
            await (self.bulk_gate if bulk else self.query_gate).wait()
        finally:
            self.running.remove(kind)
        return [[float((hash(t) >> s) % 7 + 1) for s in range(self.dim)] for t in texts]

    def bulk_calls(self) -> int:
        return sum(1 for kind, n in self.calls if kind == "passage" and n > 1)


def plugin_for(embedder: Gated):
    class Plugin:
        @hookimpl
        def register_embedders(register):
            register(embedder)

    return Plugin


def document(paragraphs: int) -> bytes:
    """Paragraphs of ~150 characters: one chunk each with the default chunk size."""
    return "\n\n".join(f"Paragraph {i} explains how the deploy step number {i} works with docker volumes and "
                       f"backups of the data folder." for i in range(paragraphs)).encode()


async def upload(client, agent_id: str, name: str, data: bytes) -> str:
    from quart.datastructures import FileStorage

    r = await client.post("/api/rag/upload", form={"agentId": agent_id},
                          files={"file": FileStorage(io.BytesIO(data), filename=name, content_type="text/plain")})
    assert r.status_code == 202, await r.get_data(as_text=True)
    return (await r.get_json())["documentId"]


async def document_state(client, agent_id: str, doc_id: str) -> dict:
    r = await client.get(f"/api/rag/documents/{doc_id}", query_string={"agentId": agent_id})
    return (await r.get_json())["document"]


async def until(condition, what: str, rounds: int = 2000):
    for _ in range(rounds):
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_ready(client, agent_id: str, doc_id: str) -> dict:
    async def ready():
        doc = await document_state(client, agent_id, doc_id)
        return doc if doc["status"] in ("ready", "failed") else None

    return await until(ready, "the document to be indexed")


async def query(client, agent_id: str, text: str) -> list[dict]:
    r = await client.post("/api/rag/query", json={"agentId": agent_id, "query": text, "topK": 3})
    assert r.status_code == 200, await r.get_data(as_text=True)
    return (await r.get_json())["results"]


async def test_queries_are_answered_while_a_large_document_indexes_and_go_before_its_next_batch(tmp_path):
    embedder = Gated()
    settings = make_settings(tmp_path, embedder="gated", embed_batch=4)
    async with running_app(settings, plugins=[plugin_for(embedder)]) as app:
        await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        small = await upload(owner, "agent_kb", "small.txt", document(3))
        assert (await wait_ready(owner, "agent_kb", small))["status"] == "ready"

        # a large document's first batch is being embedded (and held there) ...
        embedder.bulk_gate.clear()
        calls_before = embedder.bulk_calls()
        big = await upload(owner, "agent_kb", "big.txt", document(40))
        await until(lambda: embedder.bulk_calls() == calls_before + 1 and "passage" in embedder.running,
                    "the first batch of the large document")
        # ... and a question is embedded and answered at once, from the documents already indexed
        results = await asyncio.wait_for(query(owner, "agent_kb", "how does deploy step 1 work"), 10)
        assert results and {r["documentName"] for r in results} == {"small.txt"}
        assert (await document_state(owner, "agent_kb", big))["status"] == "processing"

        # while a question is being embedded, the document's next batch waits for it
        embedder.query_gate.clear()
        asking = asyncio.ensure_future(query(owner, "agent_kb", "backups of the data folder"))
        await until(lambda: "query" in embedder.running, "the question to be embedding")
        mark = len(embedder.calls)
        embedder.bulk_gate.set()  # the first batch finishes and is written ...
        doc = await until(lambda: _written(owner, big, 4), "the first batch to be written")
        # ... with the progress in percent and the time left
        assert doc["status"] == "processing" and doc["progress"] == 0.1
        assert isinstance(doc["etaSeconds"], (int, float)) and doc["etaSeconds"] >= 0
        for _ in range(20):  # the next batch would start right after the write if it did not wait
            await asyncio.sleep(0.005)
        assert embedder.bulk_calls() == calls_before + 1 and not asking.done()
        embedder.query_gate.set()
        assert await asyncio.wait_for(asking, 10)
        done = await wait_ready(owner, "agent_kb", big)
        assert (done["status"], done["chunks"]) == ("ready", 40) and "etaSeconds" not in done
        # the document's other nine batches all started after the question that was waiting
        assert embedder.calls[mark:] == [("passage", 4)] * 9


async def test_a_bulk_call_is_cut_in_the_embedders_batches_and_a_question_goes_between_them():
    from xiajiao import embed

    embedder = Gated()
    embedder.batch = 2  # a local model's own batch: an indexing batch of 6 texts is embedded in 3 parts
    embedder.bulk_gate.clear()
    texts = [f"paragraph {i}" for i in range(6)]
    bulk = asyncio.ensure_future(embed(embedder, texts, kind="passage", bulk=True))
    await until(lambda: "passage" in embedder.running, "the first part")
    embedder.query_gate.clear()
    asking = asyncio.ensure_future(embed(embedder, ["a question"], kind="query"))
    await until(lambda: "query" in embedder.running, "the question to be embedding")
    embedder.bulk_gate.set()  # the first part finishes; the second waits for the question
    for _ in range(20):
        await asyncio.sleep(0.005)
    assert embedder.calls == [("passage", 2), ("query", 1)] and not bulk.done()
    embedder.query_gate.set()
    assert len(await asyncio.wait_for(asking, 10)) == 1
    vectors = await asyncio.wait_for(bulk, 10)
    assert embedder.calls == [("passage", 2), ("query", 1), ("passage", 2), ("passage", 2)]
    assert vectors == await embedder.embed(texts)  # the parts' vectors in the texts' order


async def _written(client, doc_id: str, chunks: int) -> dict | None:
    doc = await document_state(client, "agent_kb", doc_id)
    return doc if doc["chunks"] >= chunks else None


async def test_an_ingestion_interrupted_by_a_restart_resumes_after_its_last_batch(tmp_path):
    settings = make_settings(tmp_path, embedder="gated", embed_batch=4)
    first = Gated()
    async with running_app(settings, plugins=[plugin_for(first)]) as app:
        await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        first.free_batches = 2  # the third batch hangs: the server stops in the middle of the document
        doc_id = await upload(owner, "agent_kb", "big.txt", document(30))
        await until(lambda: _written(owner, doc_id, 8), "two batches to be written")
        await until(lambda: "passage" in first.running, "the third batch")
        db = await app.xj.workspace_db("agent_kb", "rag.db")
        kept = await db.fetchall("SELECT id, position FROM chunks ORDER BY position")
        assert [r["position"] for r in kept] == list(range(8))
    # leaving the block stopped the app; the next start picks the document up by itself
    second = Gated()
    async with running_app(settings, plugins=[plugin_for(second)]) as app:
        owner = app.test_client()
        await login(owner)
        doc = await wait_ready(owner, "agent_kb", doc_id)
        assert (doc["status"], doc["chunks"], doc["error"], doc["progress"]) == ("ready", 30, None, 1)
        # it went on after the written batches: the first 8 chunks are the very same rows
        db = await app.xj.workspace_db("agent_kb", "rag.db")
        rows = await db.fetchall("SELECT id, position FROM chunks ORDER BY position")
        assert [r["position"] for r in rows] == list(range(30)) and rows[:8] == kept
        assert sum(n for kind, n in second.calls if kind == "passage") == 22
        for table in ("chunks_fts", "chunk_vec"):
            assert await db.fetchval(f"SELECT COUNT(*) FROM {table}") == 30
        # the kept upload is removed once indexed
        assert not any((app.xj.workspace("agent_kb") / "rag-sources").iterdir())
        assert [r["documentName"] for r in await query(owner, "agent_kb", "deploy step 29")][:1] == ["big.txt"]
