"""The HTTP protocol ``filejobs serve`` runs: uvicorn's httptools protocol with connection limits.

httptools (llhttp) has no bound on a request head: it buffers a header of any length whole, and
uvicorn hands the request to the app afterwards. :class:`LimitedHttpToolsProtocol` counts the
bytes of each request head as ``data_received`` gets them, before the parser sees them, and:

- answers ``431`` (problem+json) the moment the head crosses ``MAX_HEADER_BYTES`` or one of its
  lines (the request line or a header) crosses ``MAX_HEADER_LINE_BYTES``: only the bytes up to
  the limit reach the parser, nothing more is read, and the connection is closed soon after;
- answers ``408`` when a head is not complete ``HEADER_TIMEOUT`` seconds after its first byte;
- closes a connection that sends nothing for ``IDLE_TIMEOUT`` seconds after it was opened (uvicorn's
  keep-alive timeout, which this sets to the same value, only starts after a response).

A request whose bytes llhttp refuses (a broken request line or header, a lying, doubled or
conflicting ``Content-Length``, ``Transfer-Encoding`` beside it, a broken chunk) gets the same
problem+json ``400`` as every other refusal, instead of uvicorn's ``text/plain`` one. Between
requests it is answered as the other refusals are (then a FIN, and the close after ``LINGER``);
during a request whose response is still due, as uvicorn answers: at once, and the connection is
closed, so the app sees the client gone (the parser cannot go on from there either way).

When an earlier request's response is still to be written on the connection (pipelining), no
answer can be framed: the connection is closed instead. Bytes of a request pipelined in the same
read as the end of the previous one are not counted (at most one read, 256 KiB, more than the limit).

A request body reaches the app without uvicorn's two copies of every byte (appending each piece
to a ``bytearray``, then ``bytes()`` of it for the ASGI message): a piece that arrives while none
is waiting is kept as the ``bytes`` httptools made, and ``bytes()`` of a ``bytes`` object is that
object. Only pieces that arrive while an earlier one still waits for the app are joined (into a
``bytearray``, as uvicorn does). On a 1 GiB upload this saved a fifth of the event loop's CPU
(0.91 -> 0.74 s; docs/performance.md).

Counting costs the usual small request nothing but a length check and one ``rfind``: lines are
only looked at once the head has grown past ``MAX_HEADER_LINE_BYTES``. The parser is uvicorn's,
unchanged. This depends on uvicorn's internals (pyproject pins the versions;
``tests/test_http_protocol.py`` fails loudly when they change).
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from filejobs.api.security_headers import headers_for
from filejobs.errors import PROBLEM_JSON, BadRequest, HeaderFieldsTooLarge, Problem, RequestTimeout
from filejobs.settings import Settings, get_settings

#: The security headers every answer has (the app adds them to its own; this one bypasses the app).
REFUSAL_HEADERS = headers_for("")
log = logging.getLogger("uvicorn.error")

#: What ``uvicorn.run(http=...)`` is given (a string: ``--processes`` pickles the config).
PROTOCOL = "filejobs.http_protocol:LimitedHttpToolsProtocol"
#: Seconds a refused connection stays open (reading paused) after the answer and a FIN, before it
#: is closed: closing with unread bytes sends a reset, which could destroy the answer before the
#: client reads it (RFC 9112 §9.6). Unread bytes wait in the kernel's receive buffer meanwhile.
LINGER = 2.0
#: The answer to bytes the HTTP parser refused.
MALFORMED_HTTP = BadRequest(
    "The request is not valid HTTP/1.1: its request line, a header, or the framing of its body "
    "(Content-Length, Transfer-Encoding, chunks) could not be parsed.",
    title="Malformed HTTP request",
)


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_header_line_bytes: int
    header_timeout: float
    idle_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_line_bytes=min(settings.max_header_line_bytes, settings.max_header_bytes),
            header_timeout=settings.header_timeout,
            idle_timeout=settings.idle_timeout,
        )


@functools.cache
def process_limits() -> ConnectionLimits:
    """This process's limits, read from the settings at the first connection."""
    return ConnectionLimits.from_settings(get_settings())


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads and idle connections."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = limits or process_limits()
        self._max_head = limits.max_header_bytes
        self._max_line = limits.max_header_line_bytes
        self._header_timeout = limits.header_timeout
        self._idle_timeout = limits.idle_timeout
        self.timeout_keep_alive = limits.idle_timeout  # type: ignore[assignment]  # call_later takes a float
        # True from the end of one request's body until the next one's headers are complete.
        self._reading_head = True
        self._head_used = 0  # bytes of the current head fed to the parser
        self._line_used = 0  # bytes of its current (unfinished) line
        self._refused = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # ---- the connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_timer = self.loop.call_later(self._idle_timeout, self._close_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle_timer, self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._head_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._reading_head:  # a request body: straight to the parser
            super().data_received(data)
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._refused:
            return  # answered already (bytes read before reading was paused): drop
        used = self._head_used + len(data)
        if used <= self._max_line:  # no line, and so not the head, can be over a limit yet
            self._count(data, len(data))
            super().data_received(data)
        else:
            self._feed_head(data)
        if self._head_used and self._reading_head and self._head_timer is None and not self._refused:
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_too_slow)

    # ---- parser callbacks -----------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_used = self._line_used = 0

    def on_body(self, body: bytes) -> None:
        """uvicorn's ``on_body`` without the copy into a ``bytearray`` (see the module's docstring)."""
        if (self.parser.should_upgrade() and self._should_upgrade()) or self.cycle.response_complete:
            return
        cycle = self.cycle
        waiting = cycle.body
        if not waiting:
            cycle.body = body  # type: ignore[assignment]  # read once by bytes(): no copy
        elif isinstance(waiting, bytes):  # a second piece before the app took the first
            cycle.body = bytearray(waiting)
            cycle.body += body
        else:
            waiting += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    # ---- counting -------------------------------------------------------------------------------

    def _count(self, data: bytes, n: int) -> None:
        """Note that ``data[:n]`` was fed to the parser as part of the head."""
        self._head_used += n
        newline = data.rfind(b"\n", 0, n)
        self._line_used = self._line_used + n if newline < 0 else n - newline - 1

    def _feed_head(self, data: bytes) -> None:
        """Feed ``data`` (which may cross a limit) as far as the head may go, then refuse if it did."""
        stop_at_empty_line = True
        while data:
            if not self._reading_head:  # the head ended: the rest is the body (or the next request)
                super().data_received(data)
                return
            n, over = self._room(data, stop_at_empty_line)
            self._count(data, n)
            if n:
                super().data_received(data if n == len(data) else data[:n])
            if self.transport.is_closing():
                return
            if over and self._reading_head and self._head_used:  # (0: a request ended, the next began)
                self._refuse(HeaderFieldsTooLarge(over))
                return
            # The empty line was one a request may start with: scan the rest of ``data`` in one go.
            stop_at_empty_line = False
            data = data[n:]

    def _room(self, data: bytes, stop_at_empty_line: bool) -> tuple[int, str]:
        """How many of ``data``'s bytes the head may take, and which limit the next byte would cross
        ("": none). Stops early after an empty line (where a head ends), so a body is not scanned."""
        end = min(len(data), self._max_head - self._head_used)
        over_block = f"The request head is over {self._max_head} bytes." if end < len(data) else ""
        over_line = f"A line of the request head is over {self._max_line} bytes."
        start, line = 0, self._line_used
        while start < end:
            if line == 0 and stop_at_empty_line:
                stop = start + 1 if data[start] == 10 else start + 2 if data.startswith(b"\r\n", start) else 0
                if stop:
                    return (stop, "") if stop <= end else (end, over_block)
            cut = start + self._max_line - line  # the first byte this line may not have
            newline = data.find(b"\n", start, min(cut, end))
            if newline < 0:
                return (cut, over_line) if cut < end else (end, over_block)
            start, line = newline + 1, 0
        return end, over_block

    # ---- refusing -------------------------------------------------------------------------------

    def _close_idle(self) -> None:
        """Nothing came since the connection was opened."""
        self._idle_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and self._reading_head and not self._refused:
            detail = f"The request head did not arrive within {self._header_timeout:g} s."
            self._refuse(RequestTimeout(detail))

    def _refuse(self, problem: Problem, *, interrupting: bool = False) -> None:
        """Answer ``problem`` and close, or only close when an earlier response is still due; with
        ``interrupting`` (the parser cannot go on), answer even then, at once, and close (as uvicorn
        does), so the request's app sees the client gone."""
        self._refused = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._unset_keepalive_if_required()
        client = "{}:{} - ".format(*self.client) if self.client else ""
        log.warning("%s%s: %s", client, problem.title, problem.detail)
        earlier_pending = self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
        if earlier_pending:
            if interrupting:
                self.transport.write(self._answer(problem))
            self.transport.close()
            return
        self.transport.write(self._answer(problem))
        self.flow.pause_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """What uvicorn calls when llhttp refuses the bytes (``msg``: its generic text): refused as
        every request is (:meth:`_refuse`), answered even during a request whose response is due."""
        if self._refused or self.transport.is_closing():
            return
        self._refuse(MALFORMED_HTTP, interrupting=True)

    def _answer(self, problem: Problem) -> bytes:
        body = json.dumps(problem.body()).encode()
        phrase = http.HTTPStatus(problem.status).phrase
        head = [f"HTTP/1.1 {problem.status} {phrase}\r\n".encode()]
        for name, value in (*self.server_state.default_headers, *REFUSAL_HEADERS):
            head += [name, b": ", value, b"\r\n"]
        head.append(f"content-type: {PROBLEM_JSON}\r\ncontent-length: {len(body)}\r\n".encode())
        return b"".join([*head, b"connection: close\r\n\r\n", body])
