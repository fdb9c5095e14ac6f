"""The POST goes to the checked address while Host and the TLS server name stay the URL's host.

An HTTPS receiver on 127.0.0.1 holds a certificate for ``hooks.example`` (a name that resolves
nowhere) signed by a CA made here: the request reaches it only if the connection goes to the
pinned address, the TLS handshake names ``hooks.example`` (SNI) and the certificate is checked
against ``hooks.example``. A certificate for another name fails the check.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from filejobs.webhooks import address
from filejobs.webhooks.transport import PinnedSender


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificates(tmp: Path, host: str) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) files; the server's names ``host``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("filejobs test CA"))
        .issuer_name(_name("filejobs test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class _Seen:
    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.sni: list[str | None] = []


def _https_server(tmp: Path, host: str, seen: _Seen) -> tuple[ThreadingHTTPServer, Path]:
    ca, cert, key = _certificates(tmp, host)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            seen.hosts.append(self.headers["host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen.sni.append(name)  # type: ignore[assignment,func-returns-value]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, ca


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[int, Path, _Seen]]:
    seen = _Seen()
    server, ca = _https_server(tmp_path, "hooks.example", seen)
    try:
        yield server.server_address[1], ca, seen
    finally:
        server.shutdown()
        server.server_close()


def _post(url: str, ca: Path) -> int:
    sender = PinnedSender(
        timeout=5.0, connections_per_pool=2, verify=ssl.create_default_context(cafile=str(ca))
    )
    target = address.Resolved(httpx.URL(url), ("127.0.0.1",))

    async def go() -> int:
        try:
            return await sender.post(target, headers={"content-type": "application/json"}, body=b"{}")
        finally:
            await sender.aclose()

    return asyncio.run(go())


def test_https_to_the_pinned_address_keeps_host_and_sni(tls: tuple[int, Path, _Seen]) -> None:
    port, ca, seen = tls
    assert _post(f"https://hooks.example:{port}/hook", ca) == 204
    assert seen.hosts == [f"hooks.example:{port}"]
    assert seen.sni == ["hooks.example"]


def test_a_certificate_for_another_name_fails(tls: tuple[int, Path, _Seen]) -> None:
    port, ca, seen = tls
    with pytest.raises(httpx.ConnectError, match="certificate"):
        _post(f"https://other.example:{port}/hook", ca)
    assert seen.hosts == []


def test_plain_http_to_the_pinned_address_keeps_host() -> None:
    from filejobs.testing.webhooks import Receiver

    with Receiver() as receiver:
        sender = PinnedSender(timeout=5.0, connections_per_pool=2)
        url = httpx.URL(f"http://receiver.example:{receiver.port}/hook?x=1")

        async def go() -> int:
            try:
                resolved = address.Resolved(url, ("127.0.0.1",))
                return await sender.post(resolved, headers={"webhook-id": "msg_x"}, body=b"{}")
            finally:
                await sender.aclose()

        assert asyncio.run(go()) == 200
        [request] = receiver.wait_count(1)
        assert request.headers["host"] == f"receiver.example:{receiver.port}"
        assert request.path == "/hook?x=1"


def test_ipv6_addresses_are_bracketed() -> None:
    url = httpx.URL("https://hooks.example/hook").copy_with(host=str(ipaddress.ip_address("::1")))
    assert str(url) == "https://[::1]/hook"


async def _silent_server() -> tuple[asyncio.Server, list[int]]:
    """A server that reads requests and never answers; the connections it accepted, counted."""
    accepted: list[int] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        while await reader.read(65536):
            pass
        writer.close()

    return await asyncio.start_server(hold, "127.0.0.1", 0), accepted


def test_a_cancelled_request_retires_its_pool() -> None:
    """After a request is cancelled at its deadline, its pool (which httpcore can leave with a slot
    taken for good) is closed and the next request to that address gets a fresh one."""
    sender = PinnedSender(timeout=5.0, connections_per_pool=1)

    async def go() -> None:
        server, accepted = await _silent_server()
        port = server.sockets[0].getsockname()[1]
        target = address.Resolved(httpx.URL(f"http://hooks.example:{port}/hook"), ("127.0.0.1",))
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await sender.post(target, headers={}, body=b"{}")
            [stuck] = sender._pools.values()
            sender.forget(target)
            assert sender._pools == {}
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await sender.post(target, headers={}, body=b"{}")
            [fresh] = sender._pools.values()
            assert fresh is not stuck
            assert stuck.is_closed
            assert len(accepted) == 2
        finally:
            await sender.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(go())


def test_closing_gives_up_on_a_pool_that_never_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    from filejobs.webhooks import transport

    monkeypatch.setattr(transport, "CLOSE_WITHIN", 0.1)
    sender = PinnedSender(timeout=5.0, connections_per_pool=1)
    closes: list[str] = []

    class NeverCloses:
        async def aclose(self) -> None:
            closes.append("started")
            await asyncio.Event().wait()

    async def go() -> None:
        sender._pools[("http", "hooks.example", 80, "127.0.0.1")] = NeverCloses()  # type: ignore[assignment]
        await sender.aclose()

    asyncio.run(go())
    assert closes == ["started"]
