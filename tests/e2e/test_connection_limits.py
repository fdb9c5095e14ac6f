"""Connection limits of a real ``filejobs serve`` (service/filejobs/http_protocol.py), with one and with two
HTTP processes (``--processes``): slow request heads, idle connections, oversized heads.

The timers are shortened through settings (``FILEJOBS_HEADER_TIMEOUT``, ``FILEJOBS_IDLE_TIMEOUT``);
every wait is bounded by a socket timeout several times longer than the timer under test.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from filejobs.testing import Server
from tests.faults.rawhttp import exchange

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0
#: How long a test waits for what the timers must cause (the timers are 1 s).
WAIT = 8.0
GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module", params=[1, 2], ids=["1-process", "2-processes"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("connection-limits")
    env = {
        "FILEJOBS_WORKERS": "0",
        "FILEJOBS_API_PROCESSES": str(request.param),
        "FILEJOBS_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "FILEJOBS_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
    }
    with Server(root / "data", env=env, log_path=root / "server.log") as started:
        yield started
        print(f"----- server log (tail) -----\n{started.log_tail(40)}")


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, *, reset_is_close: bool = False) -> bytes:
    """Everything the server sends until it closes the connection (fails after WAIT s). With
    ``reset_is_close``, a reset ends it too: a server that closes with unread bytes of ours in its
    buffer makes the kernel send RST instead of FIN (a reset may also drop what was sent)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        if not reset_is_close:
            raise
    return received


def test_a_connection_that_never_sends_a_request_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""


def test_a_connection_idle_after_a_response_is_closed_after_the_same_timeout(server: Server) -> None:
    """uvicorn's keep-alive timeout (5 s by default) is IDLE_TIMEOUT too."""
    with connect(server) as sock:
        sock.settimeout(4.0)  # under uvicorn's own 5 s, four times IDLE_TIMEOUT
        sock.sendall(GET_HEALTH)
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b'{"status":"ok"}')


def test_a_request_head_sent_at_one_byte_per_second_is_cut_after_the_header_timeout(server: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n\r\n"
    outcome = exchange(
        "127.0.0.1",
        server.port,
        b"",
        (request[i : i + 1] for i in range(len(request))),
        throttle=1.0,
        timeout=WAIT,
    )
    assert not outcome.timed_out, "the server waited on"
    assert outcome.sent < len(request), "the whole head got through"
    assert outcome.status == 408, outcome
    assert outcome.content_type == "application/problem+json"
    problem = json.loads(outcome.body)
    assert problem["status"] == 408
    assert outcome.headers["connection"] == "close"


def test_requests_slower_than_the_timers_are_not_cut_once_their_head_is_in(server: Server) -> None:
    """The header and idle timeouts end with the head: a long-poll longer than both, and an upload
    whose body arrives over longer than both, are answered."""
    with httpx.Client(base_url=server.base_url, timeout=WAIT) as client:
        job = client.post("/v1/jobs", files={"file": ("a.txt", b"a\n", "text/plain")})
        assert job.status_code == 202, job.text
        etag = client.get(f"/v1/jobs/{job.json()['id']}").headers["ETag"]
        # Nothing runs the job (WORKERS=0): 304 only once the 2.5 s wait is over.
        polled = client.get(
            f"/v1/jobs/{job.json()['id']}", params={"wait": 2.5}, headers={"If-None-Match": etag}
        )
        assert polled.status_code == 304, polled.text

    boundary = b"slowbody"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + b"slow\n" * 4 + b"\r\n--" + boundary + b"--\r\n"
    )
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    pieces = [body[i : i + len(body) // 4 + 1] for i in range(0, len(body), len(body) // 4 + 1)]
    outcome = exchange("127.0.0.1", server.port, head, pieces, throttle=0.7, timeout=WAIT)
    assert outcome.status == 202, outcome.body


def test_an_oversized_head_gets_431_and_the_next_connection_is_served(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + b"c" * (16 * 1024) + b"\r\n\r\n"
    outcome = exchange("127.0.0.1", server.port, head, timeout=WAIT)
    assert outcome.status == 431, outcome
    assert json.loads(outcome.body)["status"] == 431
    assert httpx.get(f"{server.base_url}/healthz", timeout=WAIT).status_code == 200


def test_an_oversized_head_pipelined_behind_a_request_closes_the_connection(server: Server) -> None:
    """The first request's answer may still be due: the connection is closed, nothing else breaks."""
    with connect(server) as sock:
        sock.sendall(GET_HEALTH + b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * (70 * 1024))
        received = read_until_closed(sock, reset_is_close=True)  # closed unread: may be a reset
    assert received in (b"",) or received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:200]
    assert httpx.get(f"{server.base_url}/healthz", timeout=WAIT).status_code == 200
