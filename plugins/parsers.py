"""Document parsers: plain text, Markdown, HTML (stdlib html.parser), PDF (pypdf, text layer), DOCX (python-docx).

A parser turns the bytes of an upload into plain text, or raises ValueError with a
reason a person can act on (the document is then marked failed with it).
"""
from __future__ import annotations

import io
import re
import zipfile
from html.parser import HTMLParser

from xiajiao import Parser, guard_zip, hookimpl, parse_limits

_BOMS = (("utf-8-sig", b"\xef\xbb\xbf"), ("utf-16", b"\xff\xfe"), ("utf-16", b"\xfe\xff"))


def decode_text(data: bytes) -> str:
    """Text of unknown encoding: a BOM's, else UTF-8, else GB18030 (Chinese), else an error."""
    for encoding, bom in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding)
    if b"\x00" in data[:4096]:
        raise ValueError("the file is binary, not text")
    for encoding in ("utf-8", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValueError("the text is neither UTF-8 nor GB18030")


def parse_text(data: bytes, filename: str) -> str:
    return decode_text(data).replace("\r\n", "\n")


class _HTMLText(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "head", "svg"}
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre",
             "blockquote", "table", "ul", "ol", "hr", "title", "header", "footer", "dt", "dd"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.out.append(data)


def parse_html(data: bytes, filename: str) -> str:
    parser = _HTMLText()
    parser.feed(decode_text(data))
    parser.close()
    text = "".join(parser.out)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def parse_pdf(data: bytes, filename: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ValueError("the PDF is encrypted")
        limit = parse_limits().max_pages
        if len(reader.pages) > limit:
            raise ValueError(f"the PDF has {len(reader.pages)} pages, more than the limit of {limit}")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, OSError, KeyError, TypeError, AttributeError) as exc:
        # pypdf raises several kinds on broken files; each means: unreadable
        raise ValueError(f"the PDF cannot be read ({exc.__class__.__name__}: {exc})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise ValueError("the PDF has no text layer (a scan or an empty document)")
    return text


def parse_docx(data: bytes, filename: str) -> str:
    import docx

    guard_zip(data, kind="DOCX")
    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"the DOCX cannot be read ({exc.__class__.__name__}: {exc})") from None
    parts = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells if c.text.strip()]
            if cells:
                parts.append(" | ".join(dict.fromkeys(cells)))
    return "\n".join(parts)


def _looks_like_text(data: bytes) -> bool:
    return b"\x00" not in data[:4096]


@hookimpl
def register_parsers(register):
    register(Parser("text", [".txt", ".text", ".log", ".csv"], ["text/plain", "text/csv"], parse_text,
                    sniff=_looks_like_text))
    register(Parser("markdown", [".md", ".markdown"], ["text/markdown", "text/x-markdown"], parse_text,
                    sniff=_looks_like_text))
    register(Parser("html", [".html", ".htm", ".xhtml"], ["text/html", "application/xhtml+xml"], parse_html,
                    sniff=_looks_like_text))
    register(Parser("pdf", [".pdf"], ["application/pdf"], parse_pdf,
                    sniff=lambda d: d[:1024].lstrip().startswith(b"%PDF-"), isolate=True))
    register(Parser("docx", [".docx"],
                    ["application/vnd.openxmlformats-officedocument.wordprocessingml.document"], parse_docx,
                    sniff=lambda d: d.startswith(b"PK\x03\x04"), isolate=True))
