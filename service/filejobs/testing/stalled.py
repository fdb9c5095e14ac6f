"""Stalled uploads on a real socket: a ``POST /v1/jobs`` that sends its head and part of its body,
then nothing, with the connection left open (used by the e2e tests and scripts/stalled_uploads.py).
"""

from __future__ import annotations

import socket

BOUNDARY = b"stalled-upload-boundary"


def stalled_request(body_bytes: int) -> bytes:
    """The head of an upload declaring a file twice as long as ``body_bytes``, and its first
    ``body_bytes`` of file content: what a stalled client has sent."""
    part = (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="stalled.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    length = len(part) + 2 * body_bytes + len(b"\r\n--" + BOUNDARY + b"--\r\n")
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )
    return head + part + b"s" * body_bytes


def start_stalled_upload(port: int, body_bytes: int, *, timeout: float = 30.0) -> socket.socket:
    """Connect, send :func:`stalled_request`, and return the open socket (reads time out after
    ``timeout`` s)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(stalled_request(body_bytes))
    return sock


def read_answer_head(sock: socket.socket) -> tuple[int, dict[str, str]] | None:
    """The status and headers (lower-case names) the server answers with; None when it closed
    the connection without answering."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        buffer += data
    status_line, *lines = buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), headers
