"""A TCP proxy for tests that cuts the connection once a given number of request bytes went
through: a network that fails mid-upload, for real clients that cannot be told to fail."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``; the first connection to carry ``cut_after``
    client bytes in total is closed right there (both ways). ``sent`` counts the client bytes
    forwarded, over every connection."""

    def __init__(self, upstream_port: int, cut_after: int | None) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.sent = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closed = False

    def __enter__(self) -> CuttingProxy:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            for source, target, counted in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, target, counted, client, upstream))
                thread.daemon = True
                thread.start()
                self._threads.append(thread)

    def _pump(
        self, source: socket.socket, target: socket.socket, counted: bool, *pair: socket.socket
    ) -> None:
        try:
            while data := source.recv(256 * 1024):
                if counted:
                    with self._lock:
                        if self.cut_after is not None and self.sent + len(data) >= self.cut_after:
                            self.cut_after = None  # once
                            self.cuts += 1
                            self.sent += len(data)
                            _reset(pair[0])  # the client sees its connection reset
                            with contextlib.suppress(OSError):
                                pair[1].shutdown(socket.SHUT_RDWR)  # the server sees it end
                            return
                        self.sent += len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): a client blocked sending notices at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
