"""The lean streaming HTTP/1.1 client (xiajiao.stream_client) against raw HTTP servers on loopback:
keep-alive reuse, every body framing, SSE line rules, timeouts, and closing what a reader leaves."""
from __future__ import annotations

import asyncio
import gzip

import pytest

from conftest import free_port
from xiajiao import StreamClientError, stream_client
from xiajiao.gateway.wire import StreamClient


class RawServer:
    """Answers each request with the next scripted list of byte pieces (written one by one);
    ``close`` after an answer hangs up. Counts connections and records request heads and bodies."""

    def __init__(self, *answers: tuple[list[bytes], bool]):
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.hung_up = asyncio.Event()  # a client closed its side
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> "RawServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        close = False
        try:
            while self.answers and not close:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                pieces, close = self.answers.pop(0)
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
            if not close:
                await reader.read()  # until the client hangs up
                self.hung_up.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hung_up.set()
        writer.close()


def chunked(*parts: bytes) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def collect(client, path="/chat", body=b"{}"):
    async with client.open("POST", path, body=body, read_timeout=5) as r:
        return r.status, [d async for d in r.sse_data()]


async def test_two_streams_share_one_kept_alive_connection_and_send_one_request_each():
    events = chunked(b"data: {\"a\": 1}\n\n", b"data: [DONE]\n\n")
    async with RawServer(([SSE_HEAD, *events], False), ([SSE_HEAD, *events], False)) as srv:
        client = stream_client(srv.url, headers={"Authorization": "Bearer k"})
        assert await collect(client) == (200, ['{"a": 1}', "[DONE]"])
        assert await collect(client, body="部署".encode()) == (200, ['{"a": 1}', "[DONE]"])
        await client.aclose()
    assert srv.connections == 1
    head, body = srv.requests[1]
    assert head.startswith(b"POST /v1/chat HTTP/1.1\r\n") and b"\r\nAuthorization: Bearer k\r\n" in head
    assert f"Host: 127.0.0.1:{srv.port}".encode() in head and body == "部署".encode()


async def test_sse_lines_split_anywhere_with_crlf_cr_comments_and_multiline_data():
    raw = (b": keep-alive comment\r\n\r\nevent: delta\r\ndata: first\r\ndata:second\r\n\r\n"
           b"data: \xe4\xbd\xa0\xe5\xa5\xbd\r\rid: 7\n\ndata: last\n\n")
    pieces = [raw[i:i + 3] for i in range(0, len(raw), 3)]  # chunk boundaries cut lines, CRLFs and characters
    head = SSE_HEAD + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    async with RawServer(([head[i:i + 5] for i in range(0, len(head), 5)], False)) as srv:
        client = stream_client(srv.url)
        assert await collect(client) == (200, ["first\nsecond", "你好", "", "last"])
        await client.aclose()


@pytest.mark.parametrize("answer,reused", [
    ([b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n", b'{"error": {}}'], True),
    ([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b'{"error": ', b"{}}"], False),  # ends at the hang-up
    ([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
      *chunked(b'{"error"', b": {}}")], True),
])
async def test_sized_chunked_and_read_to_close_bodies_read_whole(answer, reused):
    ok = [SSE_HEAD, *chunked(b"data: 1\n\n")]
    async with RawServer((answer, not reused), (ok, False)) as srv:
        client = stream_client(srv.url)
        async with client.open("GET", "/models", read_timeout=5) as r:
            assert await r.json() == {"error": {}}
        assert await collect(client) == (200, ["1"])
        await client.aclose()
    assert srv.connections == (1 if reused else 2)


async def test_a_gzipped_body_is_inflated():
    data = gzip.compress(b'{"data": [1, 2]}')
    answer = [b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(data), data]
    async with RawServer((answer, False)) as srv:
        client = stream_client(srv.url)
        async with client.open("GET", "/models", read_timeout=5) as r:
            assert await r.json() == {"data": [1, 2]}
        await client.aclose()


BAD_GZIP = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: 12\r\n\r\n", b"not gzip at all"[:12]]


async def test_a_body_that_does_not_decompress_is_a_body_error_and_its_connection_is_dropped():
    ok = [SSE_HEAD, *chunked(b"data: 1\n\n")]
    async with RawServer((BAD_GZIP, False), (ok, False)) as srv:
        client = stream_client(srv.url)
        with pytest.raises(StreamClientError) as info:
            await collect(client)
        assert info.value.kind == "body"
        assert await collect(client) == (200, ["1"])
        await client.aclose()
    assert srv.connections == 2


async def test_the_openai_provider_reports_an_undecompressable_stream_as_bad_stream():
    import plugins.provider_openai as oai
    from xiajiao import ChatMessage, ChatRequest, ProviderConfig, ProviderError, Timeouts

    async with RawServer((BAD_GZIP, False)) as srv:
        provider = oai.OpenAIProvider(ProviderConfig(id="o", kind="openai", base_url=srv.url + "/v1"))
        with pytest.raises(ProviderError) as info:
            async for _ in provider.stream(ChatRequest(model="m", messages=[ChatMessage("user", "q")]),
                                           timeouts=Timeouts(connect=5, first_token=5, idle=5)):
                pass
        await provider.aclose()
    assert (info.value.code, info.value.retryable) == ("bad_stream", True)


async def test_a_connection_the_server_closed_while_idle_is_not_reused():
    ok = [SSE_HEAD, *chunked(b"data: 1\n\n")]
    async with RawServer((ok, True), (ok, False)) as srv:
        client = stream_client(srv.url)
        assert await collect(client) == (200, ["1"])
        for _ in range(200):  # wait until our side has seen the hang-up (or not: a reuse is retried then)
            if not client.idle or client.idle[0].closed:
                break
            await asyncio.sleep(0.01)
        assert await collect(client) == (200, ["1"])
        await client.aclose()
    assert srv.connections == 2


async def test_leaving_a_stream_early_closes_its_connection():
    async with RawServer(([SSE_HEAD, b"9\r\ndata: 1\n\n\r\n"], False)) as srv:
        client = stream_client(srv.url)
        async with client.open("POST", "/chat", body=b"{}", read_timeout=5) as r:
            async for _ in r.sse_data():
                break  # the server never ends its body: only a hang-up tells it we left
        await asyncio.wait_for(srv.hung_up.wait(), 10)
        assert client.idle == []
        await client.aclose()


async def test_a_silent_server_is_a_timeout_and_an_unreachable_one_a_connect_error():
    async with RawServer(([SSE_HEAD], False)) as srv:
        client = stream_client(srv.url)
        with pytest.raises(StreamClientError) as info:
            await asyncio.wait_for(collect_with(client, read_timeout=0.05), 30)
        assert info.value.kind == "timeout"
        await client.aclose()
    client = stream_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StreamClientError) as info:
        await collect(client)
    assert info.value.kind == "connect"


async def collect_with(client, read_timeout):
    async with client.open("POST", "/chat", body=b"{}", read_timeout=read_timeout) as r:
        return [d async for d in r.sse_data()]


@pytest.mark.parametrize("answer,kind", [
    ([b"SSH-2.0-OpenSSH\r\n\r\n"], "protocol"),
    ([SSE_HEAD, b"zz\r\ndata: 1\n\n\r\n"], "protocol"),
    ([SSE_HEAD, *chunked(b"data: 1\n\n")[:1]], "connect"),  # cut off before the last chunk
])
async def test_broken_answers_raise_their_kind(answer, kind):
    async with RawServer((answer, True)) as srv:
        client = stream_client(srv.url)
        with pytest.raises(StreamClientError) as info:
            await collect(client)
        assert info.value.kind == kind
        await client.aclose()


async def test_an_answer_without_a_body_ends_at_its_head_and_keeps_the_connection():
    ok = [SSE_HEAD, *chunked(b"data: 1\n\n")]
    async with RawServer(([b"HTTP/1.1 204 No Content\r\n\r\n"], False), (ok, False)) as srv:
        client = stream_client(srv.url)
        async with client.open("GET", "/models", read_timeout=5) as r:
            assert (r.status, await r.read()) == (204, b"")
        assert await collect(client) == (200, ["1"])
        await client.aclose()
    assert srv.connections == 1


@pytest.mark.parametrize("base_url", ["localhost:8000/v1", "ftp://example.org", "http://host:99999"])
async def test_a_wrong_base_url_fails_each_request_as_a_connect_error(base_url):
    client = stream_client(base_url)
    with pytest.raises(StreamClientError) as info:
        await collect(client)
    assert info.value.kind == "connect"


def _tls_files(folder):
    """A CA and a certificate for 127.0.0.1 / localhost signed by it (PEM files in ``folder``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem", folder / "cert.pem"


async def test_tls_streams_with_a_trusted_certificate_and_refuses_an_unknown_one(tmp_path):
    import ssl

    pytest.importorskip("cryptography")  # comes with mcp (pyjwt[crypto])
    ca, cert = _tls_files(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert)
    events = chunked(b"data: secure\n\n")
    srv = RawServer(([SSE_HEAD, *events], False), ([SSE_HEAD, *events], False))
    server = await asyncio.start_server(srv._serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = StreamClient(f"https://localhost:{port}/v1", ssl_context=ssl.create_default_context(cafile=str(ca)))
        assert await collect(trusting) == (200, ["secure"])
        assert await collect(trusting) == (200, ["secure"])
        assert srv.connections == 1  # kept alive over TLS too
        head = srv.requests[0][0]
        assert f"Host: localhost:{port}".encode() in head
        await trusting.aclose()
        default = stream_client(f"https://localhost:{port}/v1")  # the shared context does not know the test CA
        with pytest.raises(StreamClientError) as info:
            await collect(default)
        assert info.value.kind == "connect"
    finally:
        server.close()
