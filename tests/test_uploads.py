"""Uploads: content-sniffed types, size limit, random names, safe serving."""
from __future__ import annotations

import io
import re
import zipfile

import pytest
from quart.datastructures import FileStorage

from conftest import make_settings, running_app

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
