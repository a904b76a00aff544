"""Who the client is behind a reverse proxy: one trusted-proxy setting for every use.

Only a request whose peer is one of ``XIAJIAO_TRUSTED_PROXIES`` may say, with
``X-Forwarded-For``, ``-Proto`` and ``-Host``, which address, scheme and host the
client used; from anyone else those headers are ignored.
"""
from __future__ import annotations

import ipaddress
from typing import NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Client(NamedTuple):
    address: str
    scheme: str
    host: str


def parse_trusted(value: str) -> tuple[Network, ...]:
    """``"10.0.0.1, 172.16.0.0/12"`` -> networks; a bad entry raises ValueError naming it."""
    out = []
    for part in (value or "").split(","):
        part = part.strip()
        if part:
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"not an address or network: {part!r}") from None
    return tuple(out)


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def _first(headers, name: str) -> str:
    return (headers.get(name) or "").split(",")[0].strip()


def client(remote_addr: str | None, scheme: str, headers, trusted: tuple[Network, ...]) -> Client:
    """The client's address, scheme and host, believing forwarded headers from trusted proxies only."""
    address = remote_addr or "unknown"
    host = (headers.get("Host") or "").strip()
    if not trusted or not _is_trusted(address, trusted):
        return Client(address, scheme, host)
    hops = [h.strip() for h in (headers.get("X-Forwarded-For") or "").split(",") if h.strip()]
    while hops and _is_trusted(hops[-1], trusted):  # walk back through our own proxies
        address = hops.pop()
    if hops:
        address = hops[-1]
    proto = _first(headers, "X-Forwarded-Proto").lower()
    return Client(address, proto if proto in ("http", "https", "ws", "wss") else scheme,
                  _first(headers, "X-Forwarded-Host") or host)
