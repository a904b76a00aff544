"""Document parsers: each format to plain text, or a reason why not."""
from __future__ import annotations

import functools
import io

import pytest

from conftest import CORPUS
from plugins import parsers


def pdf_with_text(lines: list[str]) -> bytes:
    """A minimal one-page PDF with a text layer (Helvetica, ASCII)."""
    ops = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = "%PDF-1.4\n", []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n" + "".join(f"{o:010d} 00000 n \n" for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    return out.encode("latin-1")


@pytest.mark.parametrize("data, expected", [
    ("部署流程".encode(), "部署流程"),
    ("部署流程".encode("utf-8-sig"), "部署流程"),
    ("部署流程".encode("utf-16"), "部署流程"),
    ("部署流程".encode("gb18030"), "部署流程"),
    (b"line one\r\nline two", "line one\nline two"),
])
def test_text_encodings(data, expected):
    assert parsers.parse_text(data, "a.txt") == expected


def test_binary_is_not_text():
    with pytest.raises(ValueError, match="binary"):
        parsers.parse_text(b"\x00\x01\x02binary", "a.txt")


def test_markdown_of_the_corpus_is_kept_as_written():
    raw = (CORPUS / "zh" / "features" / "rag.md").read_bytes()
    assert parsers.parse_text(raw, "rag.md") == raw.decode("utf-8").replace("\r\n", "\n")


@pytest.mark.parametrize("html, expected", [
    ("<p>Hello <b>world</b></p><p>Second</p>", "Hello world\nSecond"),
    ("<html><head><title>T</title><style>x{}</style></head><body><script>var a=1;</script>正文&amp;内容</body></html>",
     "正文&内容"),
    ("<ul><li>one</li><li>two</li></ul>", "one\ntwo"),
    ("<div>a<br>b</div><noscript>no</noscript>", "a\nb"),
])
def test_html_to_text(html, expected):
    assert parsers.parse_html(html.encode(), "a.html") == expected


def test_pdf_text_layer():
    assert parsers.parse_pdf(pdf_with_text(["Deploy with Docker", "Port 18800"]), "a.pdf") == \
        "Deploy with Docker\nPort 18800"


@pytest.mark.parametrize("data, reason", [
    (b"", "the PDF cannot be read"),
    (b"%PDF-1.4 nonsense", "the PDF cannot be read"),
    (pdf_with_text([]), "the PDF has no text layer"),
])
def test_pdf_failures_say_why(data, reason):
    with pytest.raises(ValueError) as err:
        parsers.parse_pdf(data, "a.pdf")
    assert str(err.value).startswith(reason)


def test_docx_paragraphs_and_tables():
    import docx

    d = docx.Document()
    d.add_paragraph("虾饺知识库")
    d.add_paragraph("")
    d.add_paragraph("Second paragraph")
    t = d.add_table(rows=2, cols=2)
    for r, row in enumerate([("key", "value"), ("port", "18800")]):
        for c, text in enumerate(row):
            t.rows[r].cells[c].text = text
    out = io.BytesIO()
    d.save(out)
    assert parsers.parse_docx(out.getvalue(), "a.docx") == "虾饺知识库\nSecond paragraph\nkey | value\nport | 18800"


def test_broken_docx_says_why():
    with pytest.raises(ValueError, match="the DOCX cannot be read"):
        parsers.parse_docx(b"PK\x03\x04 broken", "a.docx")


async def test_parsers_are_registered_by_extension(app):
    by_ext = {ext: p.name for p in app.xj.parsers for ext in p.extensions}
    assert {e: by_ext[e] for e in (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx")} == {
        ".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html",
        ".pdf": "pdf", ".docx": "docx"}
    pdf = app.xj.parsers.get("pdf")
    assert pdf.sniff(pdf_with_text(["x"])) and not pdf.sniff(b"PK\x03\x04")


# ------------------------------------------------------------------ hostile documents


@functools.lru_cache(maxsize=4)
def docx_bomb(inflated: int, entries: int = 3) -> bytes:
    """A DOCX whose document.xml inflates to ``inflated`` bytes of one repeated paragraph (written in pieces)."""
    import zipfile

    buf = io.BytesIO()
    para = b"<w:p><w:r><w:t>" + b"A" * 4000 + b"</w:t></w:r></w:p>"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"><Override PartName="/word/document.xml" ContentType="application/'
                   'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
        z.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
                   'officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')
        for n in range(entries - 3):
            z.writestr(f"customXml/item{n}.xml", "<x/>")
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>')
            written = 0
            while written < inflated:
                f.write(para * 256)
                written += len(para) * 256
            f.write(b"</w:body></w:document>")
    return buf.getvalue()


@pytest.mark.parametrize("limits, data, reason", [
    (dict(max_inflated_bytes=10_000_000, max_ratio=1e9), lambda: docx_bomb(20_000_000), "inflates to"),
    (dict(max_ratio=50), lambda: docx_bomb(5_000_000), "compressed"),
    (dict(max_entries=10), lambda: docx_bomb(1000, entries=50), "entries"),
    (dict(), lambda: b"PK\x03\x04 not really a zip", "cannot be read"),
])
def test_zip_containers_are_checked_before_inflating(limits, data, reason):
    from xiajiao import ParseLimits, guard_zip

    with pytest.raises(ValueError, match=reason):
        guard_zip(data(), ParseLimits(**limits))


def test_pdf_pages_are_limited():
    from xiajiao.parsing import ParseLimits, _call

    with pytest.raises(ValueError, match="pages, more than the limit of 0"):
        _call(parsers.parse_pdf, pdf_with_text(["hello"]), "a.pdf", ParseLimits(max_pages=0))
    assert _call(parsers.parse_pdf, pdf_with_text(["hello"]), "a.pdf", ParseLimits()) == "hello"


async def wait_document(client, agent_id: str, doc_id: str) -> dict:
    import asyncio

    for _ in range(3000):
        r = await client.get(f"/api/rag/documents/{doc_id}", params={"agentId": agent_id})
        assert r.status_code == 200, r.text
        doc = r.json()["document"]
        if doc["status"] in ("ready", "failed"):
            return doc
        await asyncio.sleep(0.02)
    raise AssertionError(f"document still {doc['status']}")


@pytest.mark.parametrize("overrides, reason", [
    ({}, "inflates to"),  # the container check refuses it before anything is inflated
    # the check loosened: the worker process runs out of its memory cap, the server does not
    ({"parse_max_inflated_bytes": 10**12, "parse_max_ratio": 1e9, "parse_memory_mb": 150}, "memory|stopped"),
])
async def test_a_docx_bomb_fails_its_document_and_leaves_the_server_bounded(tmp_path, overrides, reason):
    import re

    import httpx

    from conftest import OWNER_PASSWORD, make_settings, running_app, server_process
    from test_uploads import PeakRSS

    bomb = docx_bomb(250 * 1024 * 1024)
    assert len(bomb) < 2 * 1024 * 1024
    settings = make_settings(tmp_path, embedder="hash", **overrides)
    async with running_app(settings):
        pass
    async with server_process(settings, "embedder", *overrides) as (proc, base):
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            assert (await client.post("/api/login", json={"password": OWNER_PASSWORD})).status_code == 200
            agent = (await client.get("/api/agents")).json()["agents"][0]["id"]
            with PeakRSS(proc.pid) as rss:
                r = await client.post("/api/rag/upload", data={"agentId": agent},
                                      files={"file": ("bomb.docx", bomb, "application/octet-stream")})
                assert r.status_code == 202, r.text
                doc = await wait_document(client, agent, r.json()["documentId"])
            assert doc["status"] == "failed" and re.search(reason, doc["error"]), doc
            assert rss.growth_mb < 60, f"server RSS grew {rss.growth_mb:.0f} MB"
            assert (await client.get("/health")).status_code == 200
