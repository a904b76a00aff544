"""Uploads: content-sniffed types, size limit, random names, safe serving."""
from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import zipfile

import httpx

import pytest
from quart.datastructures import FileStorage

from conftest import OWNER_PASSWORD, make_settings, running_app, server_process

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cf"
                    "c0f01f0005000201e5273fcb0000000049454e44ae426082")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
    return buf.getvalue()


async def upload(client, data: bytes, filename: str):
    return await client.post("/api/upload", files={"file": FileStorage(io.BytesIO(data), filename=filename)})


@pytest.mark.parametrize("data,filename,ext,inline", [
    (PNG, "image.png", "png", True),
    (PNG, "photo.txt", "png", True),            # the content decides, not the name
    (PDF, "report.pdf", "pdf", False),
    ("# 标题\n内容".encode(), "notes.md", "md", False),
    (b"plain words", "readme", "txt", False),
    (b"<script>alert(1)</script>", "evil.html", "txt", False),
])
async def test_accepted_files_are_stored_under_random_names(app, owner, data, filename, ext, inline):
    resp = await upload(owner, data, filename)
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    url = (await resp.get_json())["url"]
    assert re.fullmatch(rf"/uploads/\d{{4}}-\d\d/[A-Za-z0-9_-]+-[0-9a-f]{{16}}\.{ext}", url)
    again = (await (await upload(owner, data, filename)).get_json())["url"]
    assert again != url
    served = await owner.get(url)
    assert served.status_code == 200
    assert await served.get_data() == data
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    disposition = served.headers.get("Content-Disposition", "")
    assert disposition.startswith("attachment") != inline
    if ext == "txt":
        assert served.headers["Content-Type"].startswith("text/plain")


async def test_docx_is_accepted(owner):
    resp = await upload(owner, docx(), "论文.docx")
    assert (await resp.get_json())["url"].endswith(".docx")


@pytest.mark.parametrize("data,filename", [
    (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + b"\x00" * 64, "setup.png"),  # a Windows program
    (b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "notes.txt"),
    (b"\x00\x01\x02\xff\xfe binary", "data.txt"),
])
async def test_other_content_is_415_and_nothing_stored(app, owner, data, filename):
    resp = await upload(owner, data, filename)
    assert (resp.status_code, (await resp.get_json())["code"]) == (415, "unsupported_file_type")
    assert [p for p in app.xj.uploads_dir.rglob("*") if p.is_file()] == []


async def test_too_large_is_413(tmp_path):
    async with running_app(make_settings(tmp_path, max_upload_bytes=1000)) as app:
        c = app.test_client()
        await c.post("/api/login", json={"password": "owner-password-1"})
        resp = await upload(c, b"a" * 1001, "big.txt")
        assert (resp.status_code, (await resp.get_json())["code"]) == (413, "file_too_large")
        resp = await upload(c, b"a" * 200_000, "bigger.txt")
        assert resp.status_code == 413 and (await resp.get_json())["code"] == "too_large"
        assert (await upload(c, b"a" * 1000, "ok.txt")).status_code == 200
        assert len([p for p in app.xj.uploads_dir.rglob("*") if p.is_file()]) == 1


async def test_missing_file_field_is_400(owner):
    resp = await owner.post("/api/upload", form={"other": "x"})
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, "missing_file")


@pytest.mark.parametrize("path", [
    "/uploads/2026-03/..%2F..%2Fxiajiao.db", "/uploads/..%2F..%2F/xiajiao.db", "/uploads/2026-03/.hidden.txt",
    "/uploads/2026-03/nothing-here.png", "/uploads/x/y.png",
])
async def test_no_path_traversal(app, owner, path):
    (app.xj.uploads_dir / "2026-03").mkdir(parents=True, exist_ok=True)
    (app.xj.uploads_dir / "2026-03" / ".hidden.txt").write_text("secret")
    resp = await owner.get(path)
    assert resp.status_code == 404


async def test_uploads_need_a_login(app, owner):
    url = (await (await upload(owner, PNG, "a.png")).get_json())["url"]
    assert (await app.test_client().get(url)).status_code == 401
    assert (await upload(app.test_client(), PNG, "a.png")).status_code == 401


# ------------------------------------------------------------------ bodies counted as they arrive


class PeakRSS:
    """Samples the resident memory of a process (psutil) in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1e6


async def chunked_post(base: str, path: str, cookie: str, parts: list[tuple[str, bytes]], filler: int,
                       total: int) -> tuple[int, dict, int]:
    """POST a multipart body with Transfer-Encoding: chunked (no Content-Length), the file part ``total``
    bytes of ``filler``-sized pieces; stops sending once the server answers. Returns (status, body, bytes sent)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    boundary = "xjboundary"
    head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v.decode()}\r\n'
                   for k, v in parts if k != "file")
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n' \
            'Content-Type: text/plain\r\n\r\n'
    writer.write((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n").encode())

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    answer = asyncio.ensure_future(reader.read(65536))
    sent = 0
    piece = b"a" * filler
    try:
        writer.write(chunk(head.encode()))
        while sent < total and not answer.done():
            writer.write(chunk(piece))
            sent += len(piece)
            await writer.drain()
        if not answer.done():
            writer.write(chunk(f"\r\n--{boundary}--\r\n".encode()) + b"0\r\n\r\n")
            await writer.drain()
    except (ConnectionError, OSError):  # the server may close while we still send
        pass
    raw = await asyncio.wait_for(answer, 60)
    while b"\r\n\r\n" not in raw or not raw.rstrip().endswith((b"}", b"0")):
        try:
            more = await asyncio.wait_for(reader.read(65536), 30)
        except ConnectionError:  # the server closed on the unread rest of our body; what it sent is here
            break
        if not more:
            break
        raw += more
    writer.close()
    status = int(raw.split(b" ", 2)[1])
    body = raw.split(b"\r\n\r\n", 1)[1]
    if b"chunked" in raw.split(b"\r\n\r\n", 1)[0].lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    body = body.decode().strip()
    return status, json.loads(body) if body.endswith("}") else {"code": "(connection reset before the body)"}, sent


@pytest.mark.parametrize("path, limit_setting, code", [
    ("/api/upload", "max_upload_bytes", "too_large"),
    ("/api/rag/upload", "rag_max_document_bytes", "too_large"),
])
async def test_a_chunked_oversized_upload_is_refused_while_it_arrives(tmp_path, path, limit_setting, code):
    settings = make_settings(tmp_path, **{limit_setting: 1024 * 1024})
    async with running_app(settings):  # first start: migrations, owner, default agents
        pass
    async with server_process(settings, limit_setting) as (proc, base):
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.post("/api/login", json={"password": OWNER_PASSWORD})).status_code == 200
            cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            agent = (await client.get("/api/agents")).json()["agents"][0]["id"]
        with PeakRSS(proc.pid) as rss:
            status, body, sent = await chunked_post(base, path, cookie, [("agentId", agent.encode())],
                                                    256 * 1024, 400 * 1024 * 1024)
        assert rss.growth_mb < 40, f"server RSS grew {rss.growth_mb:.0f} MB"
        assert sent < 100 * 1024 * 1024, sent  # refused early, not after reading everything
        assert status == 413 and body["code"] in (code, "(connection reset before the body)"), body
        assert not [p for p in (settings.data_dir / "uploads").rglob("*") if p.is_file()]


async def test_knowledge_uploads_have_per_document_and_per_agent_limits(tmp_path):
    from test_rag import upload as rag_upload, wait_done

    settings = make_settings(tmp_path, embedder="hash", rag_max_document_bytes=1000, rag_max_agent_bytes=2500)
    async with running_app(settings) as app:
        c = app.test_client()
        await c.post("/api/login", json={"password": OWNER_PASSWORD})
        agent = (await (await c.get("/api/agents")).get_json())["agents"][0]["id"]
        r = await rag_upload(c, agent, "big.md", b"word " * 201)
        assert (r.status_code, (await r.get_json())["code"]) == (413, "document_too_large")
        r = await rag_upload(c, agent, "huge.md", b"word " * 20_000)  # past the body limit itself
        assert (r.status_code, (await r.get_json())["code"]) == (413, "too_large")
        for n in range(2):
            r = await rag_upload(c, agent, f"ok{n}.md", b"word " * 200)
            assert r.status_code == 202
            await wait_done(c, agent, (await r.get_json())["documentId"])
        r = await rag_upload(c, agent, "third.md", b"word " * 200)
        assert (r.status_code, (await r.get_json())["code"]) == (413, "knowledge_base_full")
