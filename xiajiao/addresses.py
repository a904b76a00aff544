"""Where an outgoing request may go: URLs given by users (webhooks) must reach public hosts.

An address is refused when it is loopback, private, link-local (cloud metadata at
169.254.169.254 among them), multicast, reserved or unspecified, or an IPv4 address in
IPv6 clothing of one of those. Hosts the owner lists (``host`` or ``host:port``) are let
through whatever they resolve to.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from .errors import BadRequest

METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
            ipaddress.ip_address("100.100.100.200")}  # AWS/GCP/Azure, AWS IPv6, Alibaba


def is_public(address: str) -> bool:
    """Is this IP address one a server-side request may reach?"""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            ip = mapped
    if ip in METADATA or ip in ipaddress.ip_network("100.64.0.0/10"):  # carrier-grade NAT is not public either
        return False
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified)


def parse_allowed(value: str) -> set[str]:
    return {h.strip().lower() for h in (value or "").split(",") if h.strip()}


async def check_url(url: str, allowed: set[str] | frozenset[str] = frozenset(), *, kind: str = "webhook",
                    setting: str = "XIAJIAO_WEBHOOK_ALLOWED_HOSTS") -> None:
    """Raise BadRequest unless ``url`` is http(s) and its host resolves only to public addresses
    (or is listed in ``allowed``). ``kind`` names the URL in messages and codes (``invalid_<kind>``,
    ``<kind>_unresolvable``, ``<kind>_forbidden``); ``setting`` is where the owner lists hosts."""
    what = "The webhook" if kind == "webhook" else "The URL"
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadRequest(f"{what} is not a valid URL", f"invalid_{kind}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{what} must be an http(s) URL", f"invalid_{kind}")
    if parts.username or parts.password:
        raise BadRequest(f"{what} must not carry a user name or password", f"invalid_{kind}")
    host = parts.hostname.lower()
    if host in allowed or f"{host}:{port}" in allowed:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise BadRequest(f"{what} host {host!r} does not resolve", f"{kind}_unresolvable") from None
    refused = sorted({str(info[4][0]) for info in infos if not is_public(str(info[4][0]))})
    if refused or not infos:
        raise BadRequest(f"{what} host {host!r} resolves to a non-public address ({', '.join(refused)}); "
                         f"the owner may list it in {setting}", f"{kind}_forbidden")
