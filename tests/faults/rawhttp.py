"""A raw-socket HTTP/1.1 client for hostile requests: it sends exactly the bytes it is given.

httpx (rightly) refuses to send a negative or non-numeric ``Content-Length``, a body shorter or
longer than the declared length, or a connection that closes half-way through a part. This one
sends a request head and a body generator as-is, in a sender thread, while the calling thread
reads the answer, so an answer given before the body is complete (a 413 from ``Content-Length``,
a 400 at the first bad byte) is seen at once, and the sender stops there as a real client would.

The body is pulled lazily from an iterator: a 20 MiB hostile body costs the test one 64 KiB block.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

#: What the client does with the connection:
#: ``send``        the whole body (or until the server answers), then read the answer;
#: ``headers``     the head only, then read the answer (a limit checked before reading the body);
#: ``half-close``  the whole body, then ``shutdown(SHUT_WR)`` (EOF), then read whatever comes;
#: ``close``       ``stop_after`` body bytes, then close the socket (a client that died mid-part);
#: ``stall``       ``stop_after`` body bytes, then nothing for ``stall`` seconds (the socket stays
#:                 open; the server must not answer 2xx nor stop serving others), then close.
Mode = Literal["send", "headers", "half-close", "close", "stall"]


@dataclass
class Exchange:
    """What happened on the wire."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Seconds from the first byte sent to the answer's head (None: no answer).
    answered_after: float | None = None
    #: Seconds from the first byte sent until the exchange was over.
    total: float = 0.0
    #: Body bytes handed to the socket (before the answer, when there was one).
    sent: int = 0
    sent_before_answer: int | None = None
    send_error: str | None = None
    #: The server closed the connection without answering.
    closed_without_answer: bool = False
    timed_out: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def chunked(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """``Transfer-Encoding: chunked`` framing of ``chunks``."""
    for chunk in chunks:
        if chunk:
            yield b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    yield b"0\r\n\r\n"


class _Reader:
    """Reads one HTTP response from ``sock``: the head, then a Content-Length body (or to EOF)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.eof = False

    def _fill(self) -> bool:
        data = self.sock.recv(256 * 1024)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def head(self) -> tuple[int, dict[str, str]] | None:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > 1024 * 1024:
                raise ValueError("response head over 1 MiB")
            if not self._fill():
                return None
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def body(self, headers: dict[str, str], limit: int = 16 * 1024 * 1024) -> bytes:
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            want = min(int(length), limit)
            while len(self.buffer) < want and self._fill():
                pass
            return self.buffer[:want]
        with contextlib.suppress(OSError):
            while len(self.buffer) < limit and self._fill():
                pass
        return self.buffer[:limit]


def exchange(
    host: str,
    port: int,
    head: bytes,
    body: Iterable[bytes] = (),
    *,
    mode: Mode = "send",
    stop_after: int | None = None,
    stall: float = 0.0,
    throttle: float = 0.0,
    timeout: float = 30.0,
) -> Exchange:
    """Send ``head`` and then ``body`` (see :data:`Mode`); return what came back.

    ``throttle`` sleeps that long between body chunks (a slow sender). ``timeout`` bounds the
    wait for an answer; past it the exchange ends with ``timed_out``.
    """
    result = Exchange()
    answered = threading.Event()
    sender_done = threading.Event()
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = time.monotonic()

    def send() -> None:
        try:
            sock.sendall(head)
            if mode == "headers":
                return
            for chunk in body:
                if answered.is_set():
                    return
                if stop_after is not None and result.sent + len(chunk) > stop_after:
                    chunk = chunk[: stop_after - result.sent]
                    if chunk:
                        sock.sendall(chunk)
                        result.sent += len(chunk)
                    break
                sock.sendall(chunk)
                result.sent += len(chunk)
                if throttle:
                    time.sleep(throttle)
            if mode == "half-close":
                sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # the server answered and closed, or reset the connection
            result.send_error = f"{type(exc).__name__}: {exc}"
        finally:
            sender_done.set()

    sender = threading.Thread(target=send, name="rawhttp-sender", daemon=True)
    sender.start()
    try:
        if mode in ("close", "stall"):
            # No answer is expected while the body is incomplete: wait for the sender, then see
            # whether the server says anything within the stall window, then hang up.
            sender_done.wait(timeout)
            sock.settimeout(max(0.05, stall))
            reader = _Reader(sock)
            if mode == "stall":
                with contextlib.suppress(TimeoutError, OSError):
                    got = reader.head()
                    if got is not None:
                        result.answered_after = time.monotonic() - started
                        result.status, result.headers = got
                        result.body = reader.body(result.headers)
            return result
        reader = _Reader(sock)
        try:
            got = reader.head()
        except TimeoutError:
            result.timed_out = True
            return result
        except ConnectionResetError:
            got = None
        if got is None:
            result.closed_without_answer = True
            return result
        result.answered_after = time.monotonic() - started
        result.sent_before_answer = result.sent
        answered.set()
        result.status, result.headers = got
        try:
            result.body = reader.body(result.headers)
        except (TimeoutError, ConnectionResetError):
            result.body = reader.buffer
        return result
    finally:
        answered.set()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes a sender blocked in sendall (EPIPE)
        sender.join(timeout)
        sock.close()  # only now: closing under a running sendall could hit a reused descriptor
        result.total = time.monotonic() - started
