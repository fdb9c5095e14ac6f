"""Helpers for the security tests: bearer headers, uploads with keys, what is stored, a frozen
clock, and an in-process ASGI call whose request body is pulled lazily and counted.

The TestClient reads a request body whole before the app sees it, so it cannot tell whether an
answer came before the body was read. :func:`asgi_call` hands the app the body one chunk at a
time and reports how many chunks the app asked for: a refusal made "before any byte is stored"
must come with ``chunks_read == 0``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import select

from filejobs.db import Database
from filejobs.errors import PROBLEM_JSON
from filejobs.models import IdempotencyKey, Job, UploadBlob
from filejobs.services import Services

REALM = 'Bearer realm="filejobs"'


def accepted_id(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def retry_after(response: httpx.Response) -> int:
    value = response.headers.get("retry-after")
    assert value is not None, f"no Retry-After: {response.headers}"
    assert value.isdigit(), value
    return int(value)


def job_count(db: Database) -> int:
    with db.read() as session:
        return int(session.exec(select(func.count()).select_from(Job)).one())


def idempotency_records(db: Database) -> list[IdempotencyKey]:
    with db.read() as session:
        return list(session.exec(select(IdempotencyKey)).all())


def stored_files(data_dir: Path, sub: str) -> list[str]:
    """Names of the files in ``data_dir/sub`` (``uploads`` or ``tmp``)."""
    folder = data_dir / sub
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


def stored_uploads(services: Services) -> list[str]:
    """The job ids whose uploads are stored: files in ``uploads/`` and small uploads kept in the
    database (``inline/<id>``: :mod:`filejobs.jobs.inline_uploads`)."""
    with services.db.read() as session:
        keys = session.exec(select(UploadBlob.storage_key)).all()
    return sorted(
        [*stored_files(services.settings.data_dir, "uploads"), *(key.split("/", 1)[1] for key in keys)]
    )


def assert_nothing_stored(services: Services, *, uploads: int, jobs: int) -> None:
    """No upload temp file left, and exactly ``uploads`` stored uploads (files or rows of the
    database) and ``jobs`` rows."""
    data_dir = services.settings.data_dir
    left = stored_files(data_dir, "tmp")
    assert left == [], f"temp files left: {left}"
    stored = stored_uploads(services)
    assert len(stored) == uploads, f"stored: {stored}"
    assert job_count(services.db) == jobs


class Clock:
    """A monotonic clock the test moves by hand (patched over a module's ``time``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---- an ASGI call with a lazily pulled, counted body -----------------------------------------

BOUNDARY = "securityboundary"


def multipart_head(name: str = "big.bin", content_type: str = "application/octet-stream") -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()


MULTIPART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass
class StreamedBody:
    """A multipart body of one ``size``-byte file, served in ``chunk``-byte pieces on demand.
    ``disconnect_after``: after that many chunks the client is gone (``http.disconnect``)."""

    size: int
    chunk: int = 64 * 1024
    disconnect_after: int | None = None
    chunks_read: int = 0
    bytes_read: int = 0
    _pieces: Iterator[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self._pieces = self._generate()

    @property
    def length(self) -> int:
        return len(multipart_head()) + self.size + len(MULTIPART_TAIL)

    def _generate(self) -> Iterator[bytes]:
        yield multipart_head()
        left = self.size
        while left > 0:
            piece = min(self.chunk, left)
            yield b"x" * piece
            left -= piece
        yield MULTIPART_TAIL

    def next_message(self) -> dict[str, Any] | None:
        """The next ``http.request`` message, or None when the client is gone."""
        if self.disconnect_after is not None and self.chunks_read >= self.disconnect_after:
            return None
        piece = next(self._pieces, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.chunks_read += 1
        self.bytes_read += len(piece)
        return {"type": "http.request", "body": piece, "more_body": True}


@dataclass
class AsgiAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def asgi_call(
    client: TestClient, method: str, path: str, body: StreamedBody, headers: dict[str, str] | None = None
) -> AsgiAnswer:
    """Call ``client``'s app (on its event loop, with its lifespan state) with ``body`` streamed."""
    all_headers = {
        "host": "testserver",
        "content-type": f"multipart/form-data; boundary={BOUNDARY}",
        "content-length": str(body.length),
        **{k.lower(): v for k, v in (headers or {}).items()},
    }
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in all_headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": dict(client.app_state),
    }

    async def run() -> AsgiAnswer:
        answered = anyio.Event()
        gone = False
        status = 0
        response_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal gone
            if not gone:
                message = body.next_message()
                if message is not None:
                    if not message["more_body"]:
                        gone = True  # the whole body was sent; next comes the disconnect
                    return message
                gone = True
                return {"type": "http.disconnect"}
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers.update(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
                )
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        await client.app(scope, receive, send)  # type: ignore[arg-type]
        return AsgiAnswer(status=status, headers=response_headers, body=b"".join(chunks))

    assert client.portal is not None, "use the TestClient as a context manager"
    return client.portal.call(run)
