"""Where an outgoing request may go: URLs given by users (webhooks, web tools, provider tests).

Hosts are read the way resolvers read them — ``2130706433``, ``0x7f000001``, ``127.1`` and
``0177.0.0.1`` are all 127.0.0.1, ``[::ffff:127.0.0.1]`` too — and classified by :func:`classify`.

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

from .errors import BadRequest, Forbidden

METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
            ipaddress.ip_address("100.100.100.200")}  # AWS/GCP/Azure, AWS IPv6, Alibaba


def is_public(address: str) -> bool:
    """Is this IP address one a server-side request may reach?"""
    ip = parse_address(address)
    return ip is not None and classify(ip) == "public"


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


# ------------------------------------------------------------------ classifying addresses (any spelling)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
KINDS = ("public", "loopback", "private", "link_local", "metadata", "reserved")


def parse_address(host: str) -> Address | None:
    """The IP address a host spells, in any of the forms resolvers accept; None for a name."""
    host = host.strip().strip("[]").rstrip(".")
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:  # the legacy IPv4 forms (decimal, hex, octal, short): inet_aton reads them as resolvers do
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if mapped is not None:
            return mapped
    return address


def classify(address: Address) -> str:
    """One of KINDS."""
    if address in METADATA:
        return "metadata"
    if address.is_loopback or address.is_unspecified:  # 0.0.0.0 and :: reach this machine
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_reserved or address.is_multicast:
        return "reserved"
    if address.is_private or (isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10")):
        return "private"
    return "public"


async def resolve(host: str) -> list[Address]:
    """Every address ``host`` stands for (itself when it is an address)."""
    address = parse_address(host)
    if address is not None:
        return [address]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    out = []
    for info in infos:
        parsed = parse_address(str(info[4][0]))
        if parsed is not None and parsed not in out:
            out.append(parsed)
    return out


def check_url_form(url: str) -> None:
    """An http(s) URL without user:password@ (which would swap an API key for Basic auth)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("The URL must be http(s)://host…", "invalid_base_url")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise BadRequest("The URL must not carry a user name or password (user@host)", "invalid_base_url")


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse ``url`` when it leads to this machine, a private or link-local network or a metadata
    service (``allow_private`` lets loopback and private networks pass; metadata never does)."""
    check_url_form(url)
    host = urlsplit(url).hostname or ""
    addresses = await resolve(host)
    if not addresses:
        raise BadRequest(f"The host {host!r} cannot be resolved", "unresolvable_host")
    allowed = {"public"} | ({"loopback", "private", "link_local"} if allow_private else set())
    for address in addresses:
        kind = classify(address)
        if kind not in allowed:
            hint = "" if kind in ("metadata", "reserved") else \
                " (set XIAJIAO_ALLOW_PRIVATE_PROVIDER_URLS=true for a model server on this machine or network)"
            raise Forbidden(f"The URL leads to a {kind.replace('_', '-')} address ({address}), which is not allowed{hint}",
                            "address_not_allowed")
