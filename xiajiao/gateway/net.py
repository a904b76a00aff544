"""What the platform's HTTP clients share, importable without loading an HTTP library.

``httpx`` and ``httpcore`` take a quarter of a second to import; the server imports them in a worker
thread once serving (:func:`xiajiao.server.warm_up`), so neither the start nor the event loop pays.
"""
from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


@functools.lru_cache(maxsize=1)
def default_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context every client shares: loading the CA bundle takes tens of ms,
    so it is built once (``xiajiao.server`` builds it in a worker thread once serving), not per client."""
    import httpx

    return httpx.create_ssl_context()


def pooled_client(base_url: str, *, headers: dict[str, str] | None = None, max_connections: int = 200,
                  max_keepalive: int = 50) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose connection pool runs on :class:`xiajiao.gateway.http.AsyncioBackend`."""
    from .http import pooled_client as make

    return make(base_url, headers=headers, max_connections=max_connections, max_keepalive=max_keepalive)
