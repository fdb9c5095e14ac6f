"""A real webhook receiver for tests and scripts: an HTTP server on 127.0.0.1 in a thread of the caller.

It records every request (headers, body, when) and answers as told: ``fail(n, status)`` answers
the next ``n`` requests with ``status``, ``down()`` closes the port (connections are refused) until
``up()``, ``hang()`` holds requests open until ``release()``. Waits take a deadline, never a sleep.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived
    #: The status code the receiver gave (0: none yet, held until released; a held request is
    #: answered on release, which its caller may no longer be waiting for; -1: hung up on).
    answered: int

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> object:
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.requests: list[Received] = []
        self._failures: list[int] = []
        self._drops = 0
        self._status = 200
        self._hang = threading.Event()
        self._hang.set()  # set: not hanging
        self._hold_seconds: float | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    # ---- behaviour ----

    def drop(self, times: int) -> None:
        """Hang up on the next ``times`` requests without an answer (as a receiver that is down or
        crashing would: the caller sees a network error, not a status)."""
        with self._lock:
            self._drops += times

    def fail(self, times: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def answer(self, status: int) -> None:
        with self._lock:
            self._status = status

    def hang(self) -> None:
        """Hold every request open (no answer) until :meth:`release`."""
        self._hang.clear()

    def release(self) -> None:
        self._hang.set()

    def down(self) -> None:
        """Close the port: connections are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def up(self) -> None:
        self._start(self.port)

    def close(self) -> None:
        self.release()
        self.down()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.close()

    # ---- waiting ----

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"the receiver did not get what was expected in {timeout} s: "
                        f"{len(self.requests)} request(s)"
                    )
                self._lock.wait(left)
            return list(self.requests)

    def wait_count(self, count: int, timeout: float = 15.0) -> list[Received]:
        return self.wait_for(lambda requests: len(requests) >= count, timeout)

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.answered < 300]

    # ---- the server ----

    def _start(self, port: int = 0) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    dropped = receiver._drops > 0
                    receiver._drops -= dropped
                    status = receiver._failures.pop(0) if receiver._failures else receiver._status
                if dropped:
                    receiver._record(Received(self.path, headers, body, time.time(), -1))
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                hanging = not receiver._hang.is_set()
                if hanging:
                    index = receiver._record(Received(self.path, headers, body, time.time(), 0))
                    receiver._hang.wait(60)
                    receiver._answered(index, status)  # if the caller still listens: it may have gone
                else:
                    receiver._record(Received(self.path, headers, body, time.time(), status))
                try:
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("location", receiver.url + "/redirected")
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a caller that hung up (a timed-out sender, a closed pool): nothing to report

        server = Server(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _record(self, received: Received) -> int:
        with self._lock:
            self.requests.append(received)
            self._lock.notify_all()
            return len(self.requests) - 1

    def _answered(self, index: int, status: int) -> None:
        with self._lock:
            held = self.requests[index]
            self.requests[index] = Received(held.path, held.headers, held.body, held.at, status)
            self._lock.notify_all()
