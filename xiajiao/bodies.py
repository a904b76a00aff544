"""Request bodies read within a limit counted while they arrive (chunked ones included).

Quart checks ``MAX_CONTENT_LENGTH`` against the declared ``Content-Length`` and against the
bytes *buffered*; a body streamed without a length (``Transfer-Encoding: chunked``) and
consumed as it arrives (multipart parsing) was never counted. :class:`BoundedBody` counts
every byte received and fails the request at the first byte over the limit; multipart files
are spooled to disk, never held whole in memory. A route lowers the limit for its own body
with :func:`limit_body` before reading it.
"""
from __future__ import annotations

import shutil
import tempfile
from typing import IO, Any

from quart import request
from quart.formparser import FormDataParser
from quart.wrappers.request import Body, Request

from .errors import TooLarge

SPOOL_BYTES = 256 * 1024  # a multipart file part above this goes to a temporary file on disk
MULTIPART_OVERHEAD = 64 * 1024  # room for the multipart envelope and small form fields around a file


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"Request body is larger than the limit of {limit} bytes", "too_large")


class BoundedBody(Body):
    """A body that counts every byte received, not only the bytes waiting to be read."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self.expected = expected_content_length
        self.received = 0
        if self._must_raise is not None and max_content_length is not None:
            self._must_raise = _too_large(max_content_length)

    def append(self, data: bytes) -> None:
        if data == b"" or self._must_raise is not None:
            return
        self.received += len(data)
        if self._max_content_length is not None and self.received > self._max_content_length:
            self.fail(_too_large(self._max_content_length))
            return
        self._data.extend(data)
        self._has_data.set()

    async def __anext__(self) -> bytes:
        try:
            return await super().__anext__()
        except StopAsyncIteration:
            if self._must_raise is not None:  # failed while the reader waited for data
                raise self._must_raise from None
            raise

    def fail(self, exc: Exception) -> None:
        """Stop reading: later bytes are dropped, the reader gets ``exc``."""
        self._must_raise = exc
        self._data.clear()
        self.set_complete()

    def limit(self, limit: int) -> None:
        """Lower the limit of this body (before or while it is read)."""
        self._max_content_length = limit if self._max_content_length is None else min(limit, self._max_content_length)
        if self._must_raise is None and ((self.expected or 0) > limit or self.received > limit):
            self.fail(_too_large(limit))


def _spool(total_content_length: Any, content_type: Any, filename: Any, content_length: Any = None) -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="rb+")


class BoundedFormDataParser(FormDataParser):
    def __init__(self, **kwargs: Any) -> None:
        kwargs["stream_factory"] = _spool
        super().__init__(**kwargs)


class BoundedRequest(Request):
    body_class = BoundedBody
    form_data_parser_class = BoundedFormDataParser


def limit_body(limit: int) -> None:
    """Refuse the current request's body beyond ``limit`` bytes (call before reading it)."""
    body = request.body
    if isinstance(body, BoundedBody):
        body.limit(limit)


def file_size(stream: IO[bytes]) -> int:
    """Size of an uploaded file's stream, without reading it."""
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    return size


def copy_file(stream: IO[bytes], path: Any) -> None:
    """Write an uploaded file's stream to ``path`` in pieces (blocking: run it in a thread)."""
    stream.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out, 1024 * 1024)
