"""service/filejobs/http_protocol.py byte by byte: the request-head limits at their exact edges.

The protocol is driven directly (``data_received``) over a fake transport, with small limits, so
every edge is exact: a head of exactly MAX_HEADER_BYTES gets through and one byte more gets 431,
whichever way the bytes are split into reads. The first test pins the uvicorn internals the
subclass relies on: it fails loudly when an upgrade changes them. Timers and a real server:
tests/e2e/test_connection_limits.py and tests/faults/test_malformed_multipart.py.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from filejobs.api.security_headers import headers_for
from filejobs.http_protocol import PROTOCOL, ConnectionLimits, LimitedHttpToolsProtocol

LIMITS = ConnectionLimits(max_header_bytes=2048, max_header_line_bytes=512, header_timeout=10, idle_timeout=5)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop

    async def answered() -> None:  # requests that reached the app: let them answer
        await asyncio.gather(*asyncio.all_tasks(loop) - {asyncio.current_task()}, return_exceptions=True)

    loop.run_until_complete(answered())
    loop.close()


def connect(loop: asyncio.AbstractEventLoop) -> tuple[LimitedHttpToolsProtocol, FakeTransport]:
    config = Config(app=ok_app, log_config=None, http=PROTOCOL, lifespan="off")
    config.load()
    protocol = LimitedHttpToolsProtocol(config, ServerState(), {}, _loop=loop, limits=LIMITS)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


def head_of(size: int, *, line: int = 500, method: bytes = b"GET", extra: bytes = b"") -> bytes:
    """A request head of exactly ``size`` bytes, in header lines of at most ``line`` bytes."""
    head = method + b" /v1/jobs HTTP/1.1\r\nHost: x\r\n" + extra
    filler = []
    left = size - len(head) - 2
    index = 0
    while left > 0:
        prefix = b"X-%d: " % index
        take = min(line, left)
        if left - take and left - take < len(prefix) + 3:  # keep room for one last whole line
            take = left - len(prefix) - 3
        filler.append(prefix + b"f" * (take - len(prefix) - 2) + b"\r\n")
        left -= take
        index += 1
    result = head + b"".join(filler) + b"\r\n"
    assert len(result) == size
    return result


def feed(protocol: LimitedHttpToolsProtocol, data: bytes, chunk: int | None = None) -> None:
    step = chunk or len(data)
    for at in range(0, len(data), step):
        protocol.data_received(data[at : at + step])


def answer(transport: FakeTransport) -> tuple[int, dict[str, Any]]:
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head
    assert b"connection: close" in head
    for name, value in headers_for(""):  # what every answer of the app has too
        assert name + b": " + value + b"\r\n" in head, name
    return status, json.loads(body)


def test_uvicorn_internals_this_protocol_relies_on(loop: asyncio.AbstractEventLoop) -> None:
    """Fails loudly when uvicorn changes what LimitedHttpToolsProtocol overrides or reads."""
    assert list(inspect.signature(HttpToolsProtocol.__init__).parameters) == [
        "self",
        "config",
        "server_state",
        "app_state",
        "_loop",
    ]
    for method in (
        "connection_made",
        "connection_lost",
        "data_received",
        "_unset_keepalive_if_required",
        "send_400_response",
    ):
        assert callable(getattr(HttpToolsProtocol, method, None)), method
    # What uvicorn does with bytes llhttp refuses: LimitedHttpToolsProtocol answers in its stead.
    refused = inspect.getsource(HttpToolsProtocol.data_received)
    assert "except httptools.HttpParserError" in refused
    assert "self.send_400_response(" in refused
    for callback in ("on_headers_complete", "on_message_complete"):  # called by httptools by name
        assert callable(getattr(HttpToolsProtocol, callback, None)), callback
    config = Config(app=ok_app, log_config=None, http=PROTOCOL, lifespan="off")
    config.load()
    assert config.http_protocol_class is LimitedHttpToolsProtocol
    protocol, transport = connect(loop)
    for attribute in ("timeout_keep_alive", "cycle", "pipeline", "flow", "parser", "loop", "client"):
        assert hasattr(protocol, attribute), attribute
    assert protocol.server_state.default_headers == []
    assert protocol.timeout_keep_alive == LIMITS.idle_timeout  # uvicorn arms it after a response
    feed(protocol, head_of(200))
    assert protocol.cycle is not None
    assert not protocol.cycle.response_complete
    loop.run_until_complete(asyncio.sleep(0))  # the app answers
    assert protocol.cycle.response_complete
    assert bytes(transport.written).startswith(b"HTTP/1.1 200 OK\r\n")
    assert protocol.timeout_keep_alive_task is not None


@pytest.mark.parametrize("chunk", [None, 1, 7, 511, 513], ids=lambda c: f"reads-of-{c or 'all'}")
def test_a_head_of_exactly_the_limit_gets_through(loop: asyncio.AbstractEventLoop, chunk: int | None) -> None:
    protocol, transport = connect(loop)
    feed(protocol, head_of(LIMITS.max_header_bytes), chunk)
    assert protocol.cycle is not None, "the request did not reach the app"
    assert not transport.written
    assert not transport.closed


@pytest.mark.parametrize("chunk", [None, 1, 7, 511, 513], ids=lambda c: f"reads-of-{c or 'all'}")
def test_one_byte_over_the_head_limit_gets_431(loop: asyncio.AbstractEventLoop, chunk: int | None) -> None:
    protocol, transport = connect(loop)
    feed(protocol, head_of(LIMITS.max_header_bytes + 1), chunk)
    assert protocol.cycle is None, "the request reached the app"
    status, problem = answer(transport)
    assert status == 431
    assert problem["status"] == 431
    assert "2048 bytes" in problem["detail"]
    assert transport.eof
    assert transport.paused
    assert not transport.closed


@pytest.mark.parametrize("chunk", [None, 1, 100])
def test_a_line_of_exactly_the_line_limit_gets_through_one_byte_more_gets_431(
    loop: asyncio.AbstractEventLoop, chunk: int | None
) -> None:
    line = LIMITS.max_header_line_bytes
    protocol, transport = connect(loop)
    feed(protocol, head_of(1000, extra=b"X-Long: " + b"l" * (line - 10) + b"\r\n"), chunk)
    assert protocol.cycle is not None
    assert not transport.written
    protocol, transport = connect(loop)
    feed(protocol, head_of(1000, extra=b"X-Long: " + b"l" * (line - 9) + b"\r\n"), chunk)
    assert protocol.cycle is None
    status, problem = answer(transport)
    assert status == 431
    assert "line" in problem["detail"]


def test_the_request_line_counts_as_a_line(loop: asyncio.AbstractEventLoop) -> None:
    protocol, transport = connect(loop)
    feed(protocol, b"GET /" + b"u" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer(transport)[0] == 431


def test_a_body_in_the_same_read_as_the_head_is_not_counted(loop: asyncio.AbstractEventLoop) -> None:
    """Long lines and many bytes after the head's empty line are the body: not the head's limits."""
    body = b"b" * 5000 + b"\n" * 300 + b"c" * 3000
    extra = b"Content-Length: %d\r\n" % len(body)
    protocol, transport = connect(loop)
    feed(protocol, head_of(1500, method=b"POST", extra=extra) + body)
    assert not transport.written
    assert not transport.closed
    assert protocol.cycle is not None
    assert bytes(protocol.cycle.body) == body
    assert not protocol.cycle.more_body


def test_empty_lines_before_a_request_count_but_do_not_end_it_early(loop: asyncio.AbstractEventLoop) -> None:
    protocol, transport = connect(loop)
    feed(protocol, b"\r\n" * 300 + head_of(1000))
    assert protocol.cycle is not None
    assert not transport.written


def test_the_next_request_on_a_connection_gets_the_whole_limit_again(loop: asyncio.AbstractEventLoop) -> None:
    protocol, transport = connect(loop)
    for _ in range(3):
        transport.written.clear()
        feed(protocol, head_of(LIMITS.max_header_bytes), 300)
        loop.run_until_complete(asyncio.sleep(0))
        assert bytes(transport.written).startswith(b"HTTP/1.1 200 OK\r\n")
    transport.written.clear()
    feed(protocol, head_of(LIMITS.max_header_bytes + 1), 300)
    assert answer(transport)[0] == 431


def test_an_oversized_head_pipelined_behind_a_request_closes_the_connection(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The first request's response is still due: a 431 cannot be framed, so the connection closes."""
    protocol, transport = connect(loop)
    feed(protocol, head_of(300) + head_of(LIMITS.max_header_bytes + 1))
    assert protocol.cycle is not None
    assert not protocol.cycle.response_complete
    assert transport.closed
    assert not transport.written


MALFORMED = [
    pytest.param(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", id="control-character-in-the-target"),
    pytest.param(b"GET / HTTP/1.1\r\nHost x\r\n\r\n", id="header-without-colon"),
    pytest.param(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        id="two-lengths",
    ),
    pytest.param(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
    pytest.param(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        id="length-and-chunked",
    ),
]


def answers(transport: FakeTransport) -> int:
    return bytes(transport.written).count(b"HTTP/1.1 ")


@pytest.mark.parametrize("request_bytes", MALFORMED)
@pytest.mark.parametrize("chunk", [None, 1], ids=lambda c: f"reads-of-{c or 'all'}")
def test_a_request_the_parser_refuses_gets_a_problem_400(
    loop: asyncio.AbstractEventLoop, request_bytes: bytes, chunk: int | None
) -> None:
    """Not uvicorn's ``text/plain`` 400: the problem+json every refusal gets, then a FIN; the
    request never reaches the app, and bytes read after it are dropped."""
    protocol, transport = connect(loop)
    feed(protocol, request_bytes, chunk)
    assert protocol.cycle is None, "the request reached the app"
    status, problem = answer(transport)
    assert status == 400
    assert problem["title"] == "Malformed HTTP request"
    assert "not valid HTTP/1.1" in problem["detail"]
    assert transport.eof
    assert transport.paused
    feed(protocol, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # read before reading paused
    assert answers(transport) == 1


def test_bytes_the_parser_refuses_after_an_answered_request_get_a_problem_400(
    loop: asyncio.AbstractEventLoop,
) -> None:
    protocol, transport = connect(loop)
    feed(protocol, head_of(300))
    loop.run_until_complete(asyncio.sleep(0))
    assert bytes(transport.written).startswith(b"HTTP/1.1 200 OK\r\n")
    transport.written.clear()
    feed(protocol, b"GET / HTTP/1.1\r\nHost\x01: x\r\n\r\n")
    status, problem = answer(transport)
    assert (status, problem["title"]) == (400, "Malformed HTTP request")
    assert transport.eof
    assert not transport.closed  # closed after LINGER, once the client read the answer


def test_a_body_broken_mid_chunk_gets_a_problem_400_and_the_app_sees_the_client_gone(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The request's response is still due: answered at once and closed (as uvicorn does), and
    the app waiting for the rest of the body is told the client is gone."""
    messages: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            messages.append(await receive())
            if messages[-1]["type"] == "http.disconnect" or not messages[-1].get("more_body"):
                return

    protocol, transport = connect(loop)
    protocol.app = app  # type: ignore[assignment]
    feed(protocol, b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    loop.run_until_complete(asyncio.sleep(0))
    assert protocol.cycle is not None
    assert not transport.written
    feed(protocol, b"zz\r\nnot a chunk\r\n")
    status, problem = answer(transport)
    assert status == 400
    assert problem["title"] == "Malformed HTTP request"
    assert transport.closed
    protocol.connection_lost(None)  # what the event loop does once the transport is closed
    loop.run_until_complete(asyncio.sleep(0))
    assert [m["type"] for m in messages] == ["http.request", "http.disconnect"]
    assert messages[0]["body"] == b"hello"
    assert answers(transport) == 1


def body_app(received: list[bytes]) -> Any:
    """An app that keeps every body message it receives and answers 200 once the body ended."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        more = True
        while more:
            message = await receive()
            received.append(message["body"])
            more = message.get("more_body", False)
        await ok_app(scope, receive, send)

    return app


def test_uvicorn_internals_on_body_relies_on(loop: asyncio.AbstractEventLoop) -> None:
    """on_body replaces uvicorn's: it reads and sets the cycle's ``body`` (a ``bytearray`` that
    ``receive`` turns into ``bytes`` and resets), ``message_event`` and the flow control."""
    source = inspect.getsource(HttpToolsProtocol.on_body)
    assert "self.cycle.body += body" in source
    assert "HIGH_WATER_LIMIT" in source
    receive = inspect.getsource(
        importlib.import_module(HttpToolsProtocol.__module__).RequestResponseCycle.receive
    )
    assert '"body": bytes(self.body)' in receive
    assert "self.body = bytearray()" in receive


@pytest.mark.parametrize("reads_between", [True, False])
def test_a_body_reaches_the_app_whole_in_order_however_its_pieces_come(
    loop: asyncio.AbstractEventLoop, reads_between: bool
) -> None:
    """Pieces the app takes one by one arrive as they came (``bytes``, no copy made); pieces that
    arrive while the app has not taken the earlier ones are joined, in order."""
    received: list[bytes] = []
    protocol, transport = connect(loop)
    protocol.app = body_app(received)  # type: ignore[assignment]
    pieces = [bytes([index]) * size for index, size in enumerate((1, 7000, 70000, 3, 90000, 1))]
    body = b"".join(pieces)
    protocol.data_received(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    for piece in pieces:
        protocol.data_received(piece)
        if reads_between:
            loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(asyncio.sleep(0))
    assert b"".join(received) == body
    assert all(type(message) is bytes for message in received)
    if reads_between:
        assert [len(message) for message in received if message] == [len(piece) for piece in pieces]
    else:
        assert len([message for message in received if message]) < len(pieces)
    assert bytes(transport.written).startswith(b"HTTP/1.1 200 OK\r\n")
