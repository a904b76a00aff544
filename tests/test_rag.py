"""Knowledge: upload, background ingestion with progress, hybrid retrieval, prompt injection, failures."""
from __future__ import annotations

import asyncio
import io
import json

import pytest

from conftest import CORPUS, login, make_settings, running_app
from test_memory import OWNER, add_agent
from xiajiao import Prompt, ToolContext, hookimpl


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, embedder="hash")


@pytest.fixture
async def agent(app):
    return await add_agent(app, "agent_kb", "Librarian", knowledge=1)


def corpus(path: str) -> bytes:
    return (CORPUS / path).read_bytes()


async def upload(client, agent_id, name, data, content_type="application/octet-stream"):
    from quart.datastructures import FileStorage

    return await client.post("/api/rag/upload", form={"agentId": agent_id},
                             files={"file": FileStorage(io.BytesIO(data), filename=name, content_type=content_type)})


async def listen(app, user_id=None) -> list[dict]:
    """Frames a real hub connection of ``user_id`` (default: the owner) receives."""
    from xiajiao import Actor

    if user_id is None:
        user_id = (await app.xj.db.fetchone("SELECT id FROM users WHERE role = 'owner'"))["id"]
    frames: list[dict] = []

    async def send(text):
        frames.append(json.loads(text))

    async def close(code=1000):
        return None

    conn = app.xj.hub.connect(send, close)
    conn.actor = Actor(user_id, "owner")
    return frames


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def wait_done(client, agent_id, doc_id, rounds=3000) -> dict:
    for _ in range(rounds):
        r = await client.get(f"/api/rag/documents/{doc_id}", query_string={"agentId": agent_id})
        doc = (await r.get_json())["document"]
        if doc["status"] in ("ready", "failed"):
            return doc
        await asyncio.sleep(0.01)
    raise AssertionError(f"document {doc_id} still {doc['status']}")


async def ingest(client, agent_id, name, data, content_type="application/octet-stream") -> dict:
    r = await upload(client, agent_id, name, data, content_type)
    assert r.status_code == 202, await r.get_data(as_text=True)
    return await wait_done(client, agent_id, (await r.get_json())["documentId"])


async def ask(client, agent_id, query, top_k=5):
    r = await client.post("/api/rag/query", json={"agentId": agent_id, "query": query, "topK": top_k})
    assert r.status_code == 200, await r.get_data(as_text=True)
    return (await r.get_json())["results"]


async def test_upload_index_and_query_markdown_in_both_languages(app, owner, agent):
    en = await ingest(owner, agent["id"], "rag.md", corpus("en/features/rag.md"))
    zh = await ingest(owner, agent["id"], "rag-zh.md", corpus("zh/features/rag.md"))
    for doc in (en, zh):
        assert (doc["status"], doc["progress"], doc["error"], doc["parser"]) == ("ready", 1, None, "markdown")
        assert doc["chunks"] > 10
    results = await ask(owner, agent["id"], "Reciprocal Rank Fusion", 3)
    assert len(results) == 3
    assert set(results[0]) == {"documentId", "documentName", "position", "passage", "heading", "score", "relevance",
                               "text", "chunk"}
    assert results[0]["documentName"] == "rag.md"
    assert "RRF" in results[0]["text"] and results[0]["chunk"] in results[0]["text"]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    results = await ask(owner, agent["id"], "分块")
    assert results[0]["documentName"] == "rag-zh.md" and "分块" in results[0]["chunk"]


@pytest.mark.parametrize("fusion", ["linear", "rrf"])
async def test_a_large_base_searched_on_two_read_threads_finds_what_one_hand_off_finds(app, owner, agent, fusion,
                                                                                        monkeypatch):
    from plugins.rag import store

    app.xj.settings.rag_fusion = fusion
    await ingest(owner, agent["id"], "rag.md", corpus("en/features/rag.md"))
    await ingest(owner, agent["id"], "rag-zh.md", corpus("zh/features/rag.md"))
    questions = ["Reciprocal Rank Fusion", "分块", "how are documents cut", "zzzz nothing"]
    small = [await ask(owner, agent["id"], q) for q in questions]
    monkeypatch.setattr(store, "ONE_HOP_CHUNKS", 0)  # every base counts as large: the halves run apart
    await ask(owner, agent["id"], questions[0])  # the first query learns the size
    assert [await ask(owner, agent["id"], q) for q in questions] == small
    assert small[0] and small[1]


@pytest.mark.parametrize("query", ["块", "库", "检"])
async def test_a_one_character_chinese_query_works(app, owner, agent, query):
    await ingest(owner, agent["id"], "rag-zh.md", corpus("zh/features/rag.md"))
    results = await ask(owner, agent["id"], query)
    assert results and all(r["documentName"] == "rag-zh.md" for r in results)
    assert query in results[0]["chunk"]


async def test_chunks_are_small_and_parents_give_context(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hash", chunk_size=120, parent_chunk_size=480)) as app:
        agent = await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        text = corpus("en/guide/architecture.md").decode()
        doc = await ingest(owner, agent["id"], "architecture.md", text.encode())
        db = await app.xj.workspace_db(agent["id"], "rag.db")
        chunks = await db.fetchall("SELECT c.start, c.text, p.start AS pstart, p.text AS ptext, p.heading FROM chunks c "
                                   "JOIN parents p ON p.id = c.parent_id ORDER BY c.position")
        assert len(chunks) == doc["chunks"]
        for c in chunks:  # each chunk's indexed text starts with its heading path (contextual chunks)
            assert c["text"].startswith(c["heading"] + "\n")
            c["text"] = c["text"][len(c["heading"]) + 1:]
        assert max(len(c["text"]) for c in chunks) <= 120
        assert max(len(c["ptext"]) for c in chunks) <= 480
        for c in chunks:  # positions point into the original text, and each chunk lies inside its parent
            assert text[c["start"]:c["start"] + len(c["text"])] == c["text"]
            assert c["pstart"] <= c["start"] and c["text"] in c["ptext"]
        covered = "".join(c["text"] for c in chunks)
        assert len(covered) >= 0.9 * len("".join(text.split()))


async def test_the_vector_half_embeds_the_title_and_the_keyword_half_the_whole_heading_path(tmp_path):
    from plugins.rag.store import INDEX, vector_text
    from xiajiao import active_embedder, embed

    async def check(app, agent_id: str) -> None:
        db = await app.xj.workspace_db(agent_id, "rag.db")
        rows = await db.fetchall("SELECT c.id, c.text, p.heading FROM chunks c JOIN parents p ON p.id = c.parent_id "
                                 "WHERE p.heading LIKE '% › % › %' ORDER BY c.position")
        assert len(rows) >= 3
        embedder = await active_embedder(app.xj)
        for r in rows[:3]:
            title, _, section = r["heading"].partition(" › ")
            body = r["text"][len(r["heading"]) + 1:]
            assert vector_text(r["text"]) == f"{title}\n{body}"
            short, full = await embed(embedder, [f"{title}\n{body}", r["text"]], kind="passage")
            sims = await db.run_read(lambda conn, r=r, v=short: INDEX.similarities_sync(conn, [r["id"]], v))
            assert sims[r["id"]] > 0.9999
            sims = await db.run_read(lambda conn, r=r, v=full: INDEX.similarities_sync(conn, [r["id"]], v))
            assert sims[r["id"]] < 0.9999
            words = section.split(" › ")[-1].split()[0]
            hits = await db.fetchall("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{words}"',))
            assert r["id"] in {h["rowid"] for h in hits}  # the section's words stay in the keyword half

    text = "# Guide\n\n## Install\n\n### Docker\n\nRun the image.\n\n### Source\n\nClone and build.\n\n" \
           "## Backups\n\n### Nightly\n\nA copy every night.\n"
    async with running_app(make_settings(tmp_path, embedder="hash")) as app:
        agent = await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        await ingest(owner, agent["id"], "guide.md", text.encode())
        await check(app, "agent_kb")
    async with running_app(make_settings(tmp_path, embedder="hash64"), plugins=[Hash64]) as app:
        owner = app.test_client()
        await login(owner)
        await ask(owner, "agent_kb", "docker")  # the switch rebuilds the vectors the same way
        await settle()
        await check(app, "agent_kb")
    assert vector_text("Guide\nno path line") == "Guide\nno path line"
    assert vector_text("a › b") == "a › b"


@pytest.mark.parametrize("name, content_type, data, parser", [
    ("notes.txt", "text/plain", "部署流程：先构建镜像，再推送。".encode("gb18030"), "text"),
    ("page.html", "text/html", b"<html><head><style>p{}</style><script>x()</script></head>"
                               b"<body><h1>Deploy</h1><p>Build the image&amp;push it.</p></body></html>", "html"),
    ("README", "text/markdown", b"# Guide\n\nRun `docker compose up`.", "markdown"),
])
async def test_parsers_feed_the_index(app, owner, agent, name, content_type, data, parser):
    doc = await ingest(owner, agent["id"], name, data, content_type)
    assert (doc["status"], doc["parser"]) == ("ready", parser)
    db = await app.xj.workspace_db(agent["id"], "rag.db")
    texts = [r["text"] for r in await db.fetchall("SELECT text FROM parents ORDER BY position")]
    expected = {"text": "部署流程：先构建镜像，再推送。", "html": "Deploy\nBuild the image&push it.",
                "markdown": "# Guide\n\nRun `docker compose up`."}[parser]
    assert texts == [expected]


@pytest.mark.parametrize("name, content_type", [("photo.png", "image/png"), ("tool.exe", "application/x-msdownload"),
                                                ("noext", "application/octet-stream")])
async def test_unsupported_file_type_is_415_and_nothing_is_stored(app, owner, agent, name, content_type):
    r = await upload(owner, agent["id"], name, b"\x89PNG\r\n\x1a\n....", content_type)
    body = await r.get_json()
    assert (r.status_code, body["code"]) == (415, "unsupported_file_type")
    assert ".pdf" in body["error"] and ".docx" in body["error"]
    r = await owner.get("/api/rag/documents", query_string={"agentId": agent["id"]})
    assert (await r.get_json())["documents"] == []


def blank_pdf() -> bytes:
    from pypdf import PdfWriter

    out = io.BytesIO()
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize("name, data, reason", [
    ("empty.pdf", b"", "the PDF cannot be read"),
    ("scan.pdf", blank_pdf(), "the PDF has no text layer (a scan or an empty document)"),
    ("broken.pdf", b"%PDF-1.7\n1 0 obj garbage", "the PDF cannot be read"),
    ("fake.docx", b"PK\x03\x04 not really a zip", "the DOCX cannot be read"),
    ("empty.txt", b"   \n ", "the document contains no text"),
])
async def test_unreadable_documents_fail_with_their_reason_and_leave_nothing(app, owner, agent, name, data, reason):
    ws = await listen(app)
    doc = await ingest(owner, agent["id"], name, data)
    for _ in range(500):  # the failed frame follows the stored status
        if ws and ws[-1]["type"] == "rag_progress" and ws[-1]["data"]["status"] == "failed":
            break
        await asyncio.sleep(0.01)
    assert (doc["status"], doc["chunks"]) == ("failed", 0)
    assert doc["error"].startswith(reason)
    db = await app.xj.workspace_db(agent["id"], "rag.db")
    counts = await db.fetchone("SELECT (SELECT COUNT(*) FROM chunks) AS c, (SELECT COUNT(*) FROM parents) AS p, "
                               "(SELECT COUNT(*) FROM chunks_fts) AS f")
    assert counts == {"c": 0, "p": 0, "f": 0}
    assert ws[-1]["type"] == "rag_progress" and ws[-1]["data"]["status"] == "failed"
    assert ws[-1]["data"]["error"].startswith(reason)
    r = await owner.get("/api/rag/documents", query_string={"agentId": agent["id"]})
    listed = (await r.get_json())["documents"]
    assert [(d["name"], d["status"], d["error"]) for d in listed] == [(name, "failed", doc["error"])]


async def test_pdf_and_docx_text_is_indexed(app, owner, agent):
    import docx

    d = docx.Document()
    d.add_paragraph("知识库支持 Word 文档。")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "端口", "18800"
    out = io.BytesIO()
    d.save(out)
    doc = await ingest(owner, agent["id"], "manual.docx", out.getvalue())
    assert doc["status"] == "ready"
    results = await ask(owner, agent["id"], "端口")
    assert results[0]["text"] == "知识库支持 Word 文档。\n端口 | 18800"


async def test_progress_is_pushed_to_the_uploader(app, owner, agent):
    frames = await listen(app)
    others = await listen(app, "user_somebody_else")
    doc = await ingest(owner, agent["id"], "glossary.md", corpus("en/guide/glossary.md"))
    await settle()
    assert others == []
    assert {f["type"] for f in frames} == {"rag_progress"}
    statuses = [f["data"]["status"] for f in frames]
    assert statuses[0] == "processing" and statuses[-1] == "ready"
    assert frames[-1]["data"] == {"documentId": doc["id"], "agentId": agent["id"], "name": "glossary.md",
                             "status": "ready", "progress": 1, "chunks": doc["chunks"]}
    progress = [f["data"]["progress"] for f in frames]
    assert progress == sorted(progress)


async def test_query_without_knowledge_is_empty_not_an_error(app, owner):
    await add_agent(app, "agent_empty", "Nobody", knowledge=0)
    assert await ask(owner, "agent_empty", "部署") == []
    assert not (app.xj.workspace("agent_empty") / "rag.db").exists()
    r = await owner.get("/api/rag/documents", query_string={"agentId": "agent_empty"})
    assert (await r.get_json())["documents"] == []


@pytest.mark.parametrize("body, status, code", [
    ({"agentId": "agent_kb", "query": ""}, 400, "invalid_query"),
    ({"agentId": "agent_kb", "query": "x" * 2001}, 400, "query_too_long"),
    ({"agentId": "agent_kb", "query": "x", "topK": 0}, 400, "invalid_top_k"),
    ({"agentId": "agent_kb", "query": "x", "topK": "many"}, 400, "validation_error"),
    ({"agentId": "ghost", "query": "x"}, 404, "agent_not_found"),
    ({"query": "x"}, 400, "validation_error"),
])
async def test_query_bad_input(app, owner, agent, body, status, code):
    r = await owner.post("/api/rag/query", json=body)
    assert (r.status_code, (await r.get_json())["code"]) == (status, code)


async def test_upload_bad_input(app, owner, agent):
    from quart.datastructures import FileStorage

    r = await owner.post("/api/rag/upload", form={"agentId": agent["id"]})
    assert (r.status_code, (await r.get_json())["code"]) == (400, "missing_file")
    r = await upload(owner, "ghost", "a.md", b"# hi")
    assert (r.status_code, (await r.get_json())["code"]) == (404, "agent_not_found")
    r = await owner.post("/api/rag/upload", files={"file": FileStorage(io.BytesIO(b"x"), filename="a.md")})
    assert (r.status_code, (await r.get_json())["code"]) == (400, "missing_agent_id")


async def test_delete_removes_a_document_and_its_passages(app, owner, agent):
    doc = await ingest(owner, agent["id"], "docker.md", corpus("en/deployment/docker.md"))
    keep = await ingest(owner, agent["id"], "faq.md", corpus("en/guide/faq.md"))
    assert (await ask(owner, agent["id"], "docker compose volumes"))[0]["documentName"] == "docker.md"
    r = await owner.delete(f"/api/rag/documents/{doc['id']}", query_string={"agentId": agent["id"]})
    assert (r.status_code, await r.get_json()) == (200, {"ok": True, "deleted": doc["id"]})
    assert {x["documentName"] for x in await ask(owner, agent["id"], "docker compose volumes", 10)} == {"faq.md"}
    db = await app.xj.workspace_db(agent["id"], "rag.db")
    assert await db.fetchval("SELECT COUNT(*) FROM chunks") == keep["chunks"]
    assert await db.fetchval("SELECT COUNT(*) FROM chunks_fts") == keep["chunks"]
    assert await db.fetchval("SELECT COUNT(*) FROM chunk_vec") == keep["chunks"]
    r = await owner.get(f"/api/rag/documents/{doc['id']}", query_string={"agentId": agent["id"]})
    assert (r.status_code, (await r.get_json())["code"]) == (404, "document_not_found")


@pytest.mark.parametrize("role, upload_status, query_status, delete_status", [
    ("guest", 403, 403, 403), ("member", 202, 200, 403), ("admin", 202, 200, 404)])
async def test_access_by_role(app, agent, role, upload_status, query_status, delete_status):
    from xiajiao import auth

    await auth.create_user(app.xj.db, username=f"u_{role}", password="password-123", role=role)
    c = app.test_client()
    await login(c, "password-123", f"u_{role}")
    assert (await upload(c, agent["id"], "a.md", b"# Hello")).status_code == upload_status
    r = await c.post("/api/rag/query", json={"agentId": agent["id"], "query": "hello"})
    assert r.status_code == query_status
    r = await c.delete("/api/rag/documents/doc_missing", query_string={"agentId": agent["id"]})
    assert r.status_code == delete_status


# ------------------------------------------------------------------ agent side


async def test_rag_query_tool_and_prompt_injection_with_citations(app, owner, agent):
    await ingest(owner, agent["id"], "docker.md", corpus("en/deployment/docker.md"))
    context = ToolContext(app=app.xj, agent=agent, channel=None, message=None, actor=OWNER)
    out = await app.xj.tools.get("rag_query").fn({"query": "persistent volumes for docker", "topK": 2}, context)
    assert [r["cite"] for r in out["results"]] == [1, 2]
    assert out["results"][0]["documentName"] == "docker.md"

    prompt = Prompt(soul="You are Librarian.")
    await app.xj.hook("prepare_prompt", prompt=prompt, agent=agent, channel=None,
                      message={"id": "m1", "content": "How do I keep data with docker volumes?"}, actor=OWNER)
    rendered = prompt.render()
    section = rendered.split("## Knowledge\n", 1)[1]
    assert section.startswith("Passages from your knowledge base; cite them as [n] when you use them.\n\n[1] docker.md")
    assert len(section) <= app.xj.settings.rag_prompt_chars + 100


async def test_no_injection_when_knowledge_is_off(app, owner):
    agent = await add_agent(app, "agent_off", "Off", knowledge=0)
    await ingest(owner, agent["id"], "docker.md", corpus("en/deployment/docker.md"))
    prompt = Prompt(soul="You are Off.")
    await app.xj.hook("prepare_prompt", prompt=prompt, agent=agent, channel=None,
                      message={"id": "m1", "content": "docker volumes"}, actor=OWNER)
    assert "## Knowledge" not in prompt.render()


# ------------------------------------------------------------------ robustness


async def test_an_interrupted_ingestion_resumes_on_the_next_start(tmp_path):
    settings = make_settings(tmp_path, embedder="hash", embed_batch=16)
    big = (corpus("en/guide/architecture.md").decode() + "\n\n") * 40
    async with running_app(settings) as app:
        agent = await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        done = await ingest(owner, agent["id"], "small.md", corpus("en/guide/faq.md"))
        r = await upload(owner, agent["id"], "big.md", big.encode())
        doc_id = (await r.get_json())["documentId"]
        db = await app.xj.workspace_db(agent["id"], "rag.db")
        for _ in range(2000):
            if await db.fetchval("SELECT chunks FROM documents WHERE uid = ?", (doc_id,)):
                break
            await asyncio.sleep(0.005)
        assert await db.fetchval("SELECT status FROM documents WHERE uid = ?", (doc_id,)) == "processing"
        # leaving the block stops the app mid-ingestion
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        big_doc = await wait_done(owner, "agent_kb", doc_id)  # the start resumed it by itself
        r = await owner.get("/api/rag/documents", query_string={"agentId": "agent_kb"})
        docs = {d["name"]: d for d in (await r.get_json())["documents"]}
        assert (docs["big.md"]["status"], docs["big.md"]["error"]) == ("ready", None) and big_doc["chunks"] > 16
        assert (docs["small.md"]["status"], docs["small.md"]["chunks"]) == ("ready", done["chunks"])
        db = await app.xj.workspace_db("agent_kb", "rag.db")
        for table in ("chunks", "chunks_fts", "chunk_vec"):
            assert await db.fetchval(f"SELECT COUNT(*) FROM {table}") == done["chunks"] + big_doc["chunks"]


async def test_a_crash_mid_ingestion_is_cleaned_on_next_open(tmp_path):
    """A process killed mid-ingestion leaves a 'processing' document with some rows; without its uploaded
    file (gone, or from before files were kept) the next open removes them and marks it failed."""
    settings = make_settings(tmp_path, embedder="hash")
    async with running_app(settings) as app:
        agent = await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        await ingest(owner, agent["id"], "faq.md", corpus("en/guide/faq.md"))
        db = await app.xj.workspace_db(agent["id"], "rag.db")
        # what a killed process leaves behind: the rows of one written batch, status 'processing'
        await db.execute("UPDATE documents SET status = 'processing', progress = 0.5")
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        assert await ask(owner, "agent_kb", "free") == []
        r = await owner.get("/api/rag/documents", query_string={"agentId": "agent_kb"})
        [doc] = (await r.get_json())["documents"]
        assert (doc["status"], doc["chunks"]) == ("failed", 0) and doc["error"].startswith("interrupted")
        db = await app.xj.workspace_db("agent_kb", "rag.db")
        for table in ("chunks", "parents", "chunks_fts", "chunk_vec"):
            assert await db.fetchval(f"SELECT COUNT(*) FROM {table}") == 0


async def test_a_10_mb_text_indexes_completely(tmp_path):
    settings = make_settings(tmp_path, embedder="hash", embed_batch=1024, max_upload_bytes=16 * 1024 * 1024,
                             rag_max_document_bytes=16 * 1024 * 1024)
    base = b"".join(corpus(f"en/guide/{n}.md") for n in ("architecture", "faq", "glossary", "security"))
    data = base * (10 * 1024 * 1024 // len(base) + 1)
    assert len(data) >= 10 * 1024 * 1024
    async with running_app(settings) as app:
        agent = await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        doc = await ingest(owner, agent["id"], "huge.txt", data)
        assert doc["status"] == "ready" and doc["chars"] == len(data.decode()), doc["error"]
        db = await app.xj.workspace_db("agent_kb", "rag.db")
        assert doc["chunks"] > 50000
        for table in ("chunks", "chunks_fts", "chunk_vec"):
            assert await db.fetchval(f"SELECT COUNT(*) FROM {table}") == doc["chunks"]
        last = await db.fetchone("SELECT text FROM parents ORDER BY position DESC LIMIT 1")
        assert data.decode().rstrip().endswith(last["text"])


class Hash64:
    """A second embedder, to switch to."""

    @hookimpl
    def register_embedders(register):
        from plugins.embedders import HashEmbedder

        e = HashEmbedder(dim=64)
        e.name = "hash64"
        register(e)


async def test_switching_embedders_reindexes_with_progress(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hash")) as app:
        agent = await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        doc = await ingest(owner, agent["id"], "docker.md", corpus("en/deployment/docker.md"))
        before = await ask(owner, agent["id"], "docker compose volumes")
    async with running_app(make_settings(tmp_path, embedder="hash64"), plugins=[Hash64]) as app:
        frames = await listen(app)
        owner = app.test_client()
        await login(owner)
        after = await ask(owner, "agent_kb", "docker compose volumes")
        await settle()
        assert after[0]["documentName"] == before[0]["documentName"] == "docker.md"
        db = await app.xj.workspace_db("agent_kb", "rag.db")
        assert await db.fetchall("SELECT name, embedder, dim, state FROM vector_meta") == [
            {"name": "chunk_vec", "embedder": "hash64", "dim": 64, "state": "ready"}]
        assert await db.fetchval("SELECT COUNT(*) FROM chunk_vec") == doc["chunks"]
        assert frames[0] == {"type": "rag_reindex", "data": {"agentId": "agent_kb", "embedder": "hash64",
                                                             "done": 0, "total": doc["chunks"]}}
        assert frames[-1]["data"]["done"] == doc["chunks"]


def versioned(version):
    """A plugin registering the hash embedder as "hashv" with this ``version`` (None: none)."""

    class Versioned:
        @hookimpl
        def register_embedders(register):
            from plugins.embedders import HashEmbedder

            e = HashEmbedder()
            e.name = "hashv"
            if version:
                e.version = version
            register(e)

    return Versioned


async def test_a_new_version_of_the_same_embedder_rebuilds_its_vectors(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hashv"), plugins=[versioned(None)]) as app:
        agent = await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        doc = await ingest(owner, agent["id"], "docker.md", corpus("en/deployment/docker.md"))
    async with running_app(make_settings(tmp_path, embedder="hashv"), plugins=[versioned("2")]) as app:
        frames = await listen(app)
        owner = app.test_client()
        await login(owner)
        assert (await ask(owner, "agent_kb", "docker compose volumes"))[0]["documentName"] == "docker.md"
        await settle()
        db = await app.xj.workspace_db("agent_kb", "rag.db")
        assert await db.fetchall("SELECT name, embedder, dim, state FROM vector_meta") == [
            {"name": "chunk_vec", "embedder": "hashv@2", "dim": 256, "state": "ready"}]
        assert frames[0]["type"] == "rag_reindex" and frames[-1]["data"]["done"] == doc["chunks"]


async def test_knowledge_lives_in_the_agent_folder(app, owner, agent):
    await ingest(owner, agent["id"], "faq.md", corpus("en/guide/faq.md"))
    tables = {r["name"] for r in await app.xj.db.fetchall("SELECT name FROM sqlite_master")}
    assert not {"documents", "chunks", "parents"} & tables
    assert (app.xj.workspace(agent["id"]) / "rag.db").is_file()
    assert json.dumps(await ask(owner, agent["id"], "free", 1), ensure_ascii=False).count("faq.md") == 1


# ------------------------------------------------------------------ the default embedder, across languages

PARAPHRASES = [  # (question, the page that answers it, in the other language)
    ("启动时提示端口被占用怎么办？", "troubleshooting.md"),
    ("从 Dify 迁移过来需要做什么？", "migration.md"),
    ("Connecting the assistant to a Feishu workspace", "integrations.zh.md"),
    ("What is new in release 1.1?", "changelog.zh.md"),
]
PAGES = {"agent_en": [("troubleshooting.md", "en/guide/troubleshooting.md"), ("migration.md", "en/guide/migration.md")],
         "agent_zh": [("integrations.zh.md", "zh/features/integrations.md"), ("changelog.zh.md", "zh/guide/changelog.md")]}


async def test_paraphrased_questions_find_documents_across_languages_with_the_default_embedder(tmp_path):
    """Chinese questions against English pages and English questions against Chinese pages.

    (In a knowledge base mixing both languages, same-language pages tend to win; see docs/embedders.md.)
    """
    settings = make_settings(tmp_path)  # no embedder named: the best installed one
    async with running_app(settings) as app:
        from xiajiao import active_embedder

        assert (await active_embedder(app.xj)).name == "e5-small"
        owner = app.test_client()
        await login(owner)
        for agent_id, pages in PAGES.items():
            await add_agent(app, agent_id, agent_id, knowledge=1)
            for name, path in pages:
                assert (await ingest(owner, agent_id, name, corpus(path)))["status"] == "ready"
        for question, page in PARAPHRASES:
            agent_id = "agent_en" if page in dict(PAGES["agent_en"]) else "agent_zh"
            results = await ask(owner, agent_id, question, 3)
            # rank 1 or 2: the two pages of an agent can score within 0.001 of each other (heading
            # paths and sections move such ties); bench/retrieval measures recall@1/3 on 92 questions
            assert page in [r["documentName"] for r in results[:2]], question


class RstParser:
    """A plugin adding a document type."""

    @staticmethod
    @hookimpl
    def register_parsers(register):
        from xiajiao import Parser

        register(Parser("rst", [".rst"], ["text/x-rst"], lambda data, name: data.decode().replace("=", "").strip()))


async def test_a_plugin_parser_is_used_for_its_extension(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="hash"), plugins=[RstParser]) as app:
        await add_agent(app, "agent_kb", knowledge=1)
        owner = app.test_client()
        await login(owner)
        doc = await ingest(owner, "agent_kb", "guide.rst", b"Title\n=====\n\nReStructuredText body.")
        assert (doc["status"], doc["parser"]) == ("ready", "rst")
        assert (await ask(owner, "agent_kb", "ReStructuredText"))[0]["text"] == "Title\n\n\nReStructuredText body."


KEYWORD_CHUNKS = ["cap word alpha", "cap word beta", "cap rare gamma", "cap cape delta", "cap words", "cap",
                  "zeta", "zeta", "zeta", "zeta"]


@pytest.mark.parametrize("query, budget, expected", [
    ("cap rare word", 100, '"cap"* OR "rare"* OR "word"*'),  # a base within the budget: every term
    ("cap rare word", 3, '"rare"*'),  # rare (1 chunk) fits; word* (3) would pass the budget
    ("cap rare word", 5, '"rare"* OR "word"*'),  # cap* (7 chunks) and even "cap" (6) are too common
    ("cap cpx", 6, '"cap" OR "cpx"*'),  # cap* is too common, the exact word fits next to cpx* (0)
    ("cape", 1, '"cape"*'),  # one term always stays
    ("部署 cap", 2, '"部署"'),  # a gram found nowhere is the rarest
])
async def test_the_keyword_half_leaves_out_the_most_common_terms_of_a_large_base(tmp_path, query, budget, expected):
    from plugins.rag.store import MIGRATIONS, keyword_expression
    from xiajiao import fts_any_parts, index_text
    from xiajiao.db import Database

    db = await Database(tmp_path / "rag.db", migrations=MIGRATIONS).open()
    try:
        def fill(conn):
            conn.execute("INSERT INTO documents (id, uid, name, parser, size, sha256, status, created_at, updated_at) "
                         "VALUES (1, 'doc_1', 'a.md', 'markdown', 1, '', 'ready', '', '')")
            conn.execute("INSERT INTO parents (id, document_id, position, start, text) VALUES (1, 1, 0, 0, '')")
            for i, text in enumerate(KEYWORD_CHUNKS, 1):
                conn.execute("INSERT INTO chunks (id, document_id, parent_id, position, start, text) "
                             "VALUES (?, 1, 1, ?, 0, ?)", (i, i, text))
                conn.execute("INSERT INTO chunks_fts (rowid, body) VALUES (?, ?)", (i, index_text(text)))

        await db.run_write(fill)
        assert await db.run_read(lambda conn: keyword_expression(conn, fts_any_parts(query), budget)) == expected
    finally:
        await db.close()
