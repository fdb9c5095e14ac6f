"""What the upload tests share: raw multipart bodies (a fixed boundary, so malformed and hostile
requests can be sent as-is), problem and cleanup assertions, ``asgi_post`` (drives the app with a body
that arrives in chunks, or stops with a disconnect, which the TestClient cannot do because it reads
the whole request body before calling the app) and a spying, failing upload sink."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from filejobs.direct_io import DirectWriter
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.submit import create_job
from filejobs.services import Services
from filejobs.storage import Buffers, Digest, UploadSink
from filejobs.uploads import WRITES_IN_FLIGHT
from tests.conftest import files_under
from tests.test_sniff import png_bytes

MiB = 1024 * 1024
BOUNDARY = "filejobs-test-boundary-7d3f"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
PNG = png_bytes()
SLEEP_DEFAULTS = {"seconds": 1.0, "steps": 10, "ignore_cancel": False}

#: Chunks handed to the writer before a failure so that at least one write has surely completed:
#: the writer takes chunk k only after writing chunk k-1, and at most WRITES_IN_FLIGHT wait queued.
SURELY_WRITTEN = WRITES_IN_FLIGHT + 3

# ---- building bodies --------------------------------------------------------------------------


def part(
    name: str | None,
    content: bytes | str,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    disposition: bytes | None = None,
    extra_headers: bytes = b"",
) -> bytes:
    """One multipart part; ``disposition`` replaces the whole Content-Disposition header line."""
    if disposition is None:
        value = "form-data" + (f'; name="{name}"' if name is not None else "")
        if filename is not None:
            value += f'; filename="{filename}"'
        disposition = b"Content-Disposition: " + value.encode("utf-8") + b"\r\n"
    headers = disposition + extra_headers
    if content_type is not None:
        headers += f"Content-Type: {content_type}\r\n".encode()
    body = content.encode("utf-8") if isinstance(content, str) else content
    return f"--{BOUNDARY}\r\n".encode() + headers + b"\r\n" + body + b"\r\n"


def file_part(
    content: bytes = b"hello world\n", filename: str = "hello.txt", content_type: str = "text/plain"
) -> bytes:
    return part("file", content, filename=filename, content_type=content_type)


def file_head(filename: str) -> bytes:
    """The start of a file part, up to its first byte of content."""
    disposition = f'Content-Disposition: form-data; name="file"; filename="{filename}"'
    return f"--{BOUNDARY}\r\n{disposition}\r\n\r\n".encode()


def multipart(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def agen(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


# ---- assertions -------------------------------------------------------------------------------


def assert_problem(
    response: httpx.Response, status: int, data_dir: Path, *, detail: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 answer with ``status`` that names no server path and holds no trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert body["type"].startswith("https://")
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    text = response.text
    for leak in (str(data_dir), str(data_dir.resolve()), str(data_dir.parent), "Traceback", 'File "'):
        assert leak not in text, f"{leak!r} leaked into {text}"
    if detail is not None:
        assert detail in body["detail"], body["detail"]
    return body


def assert_nothing_left(client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher) -> None:
    """No temp file, no upload, no row, nothing dispatched."""
    assert files_under(data_dir) == []
    listing = client.get("/v1/jobs")
    assert listing.status_code == 200
    assert listing.json() == {"items": [], "next_cursor": None}
    assert dispatcher.submitted == []


def stored_upload(data_dir: Path, job_id: str) -> Path:
    """Where the job's upload is stored as a file (a larger one; see :func:`stored_content`)."""
    return data_dir / "uploads" / job_id


def _read_only(data_dir: Path) -> contextlib.closing[sqlite3.Connection]:
    """The data directory's SQLite database, opened read-only (closed on leaving the block)."""
    return contextlib.closing(sqlite3.connect(f"file:{data_dir / 'filejobs.db'}?mode=ro", uri=True))


def stored_content(data_dir: Path, job_id: str) -> bytes:
    """The bytes stored for the job's upload: its file in ``uploads/``, or, for a small one, the row
    kept in the database (``upload_blobs``, :mod:`filejobs.jobs.inline_uploads`)."""
    path = stored_upload(data_dir, job_id)
    if path.exists():
        return path.read_bytes()
    with _read_only(data_dir) as conn:
        found = conn.execute(
            "SELECT data FROM upload_blobs WHERE storage_key = ?", (f"inline/{job_id}",)
        ).fetchone()
    assert found is not None, f"no upload is stored for job {job_id}"
    return bytes(found[0])


def kept_in_database(data_dir: Path) -> list[str]:
    """The keys of the small uploads kept in the data directory's database (``inline/<job id>``)."""
    with _read_only(data_dir) as conn:
        return sorted(key for (key,) in conn.execute("SELECT storage_key FROM upload_blobs"))


def assert_only_upload(data_dir: Path, job_id: str) -> None:
    """The data directory holds this job's upload and nothing else: its file, or no file at all
    when it is kept in the database (then that row is there)."""
    path = stored_upload(data_dir, job_id)
    if path.exists():
        assert files_under(data_dir) == [path]
    else:
        stored_content(data_dir, job_id)
        assert files_under(data_dir) == []


# ---- apps with their own settings, and a chunked ASGI client ---------------------------------


@dataclass
class App:
    client: TestClient
    data_dir: Path
    dispatcher: InMemoryDispatcher

    @property
    def services(self) -> Services:
        services: Services = self.client.app_state["services"]
        return services


DISCONNECT = b"<disconnect>"
#: The client sends nothing more (and stays connected, for up to HANG s) from this point on.
STALL = b"<stall>"
#: A bound on waits for a condition that the code under test must bring about (never reached
#: when it works; it turns a hang into a failure when it does not).
HANG = 10.0


def asgi_post(
    client: TestClient, chunks: Iterable[bytes], headers: dict[str, str], path: str = "/v1/jobs"
) -> tuple[int, dict[str, str], bytes]:
    """POST to the running app with the body delivered chunk by chunk, as a server would.

    A ``DISCONNECT`` item makes the client go away at that point; a ``STALL`` item makes it send
    nothing more, connected. Chunks are pulled lazily, so a generator body is never held in memory.
    """

    async def call() -> list[dict[str, Any]]:
        source = iter(chunks)
        finished = False
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal finished
            if finished:
                return {"type": "http.disconnect"}
            chunk = next(source, None)
            if chunk is None:
                finished = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if chunk is DISCONNECT:
                finished = True
                return {"type": "http.disconnect"}
            if chunk is STALL:  # until the app gives up on the body (or, bounded, the client)
                await asyncio.sleep(HANG)
                finished = True
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            "client": ("testclient", 50000),
            "server": ("testserver", 80),
            "state": client.app_state.copy(),
        }
        await client.app(scope, receive, send)  # type: ignore[arg-type]
        return sent

    messages = client.portal.call(call)  # type: ignore[union-attr]
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    response_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], response_headers, body


def as_response(status: int, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.Response(status, headers=headers, content=body)


# ---- a sink that watches the temp file, and can fail like a full disk -------------------------


class SpySink:
    """Wraps the real upload sink: counts bytes, sees the temp file on disk, can fail on demand."""

    def __init__(
        self,
        real: UploadSink,
        tmp_dir: Path,
        *,
        fail_after: int | None = None,
        write_errno: int = errno.ENOSPC,
        commit_errno: int | None = None,
    ) -> None:
        self.real = real
        self.job_id = real.job_id
        self.tmp_dir = tmp_dir
        self.fail_after = fail_after
        self.write_errno = write_errno
        self.commit_errno = commit_errno
        self.written = 0
        self.largest_temp_file = 0
        self.aborted = False
        self.committed: str | None = None

    @property
    def held(self) -> bool:
        return self.real.held

    def _error(self, code: int) -> OSError:
        # Like the real thing, the error names a server path: it must not reach the client.
        return OSError(code, os.strerror(code), str(self.tmp_dir / "upload.part"))

    def _look_at_temp_files(self) -> None:
        sizes = [p.stat().st_size for p in self.tmp_dir.iterdir()]
        self.largest_temp_file = max([self.largest_temp_file, *sizes])

    async def write(self, data: Buffers, *, final: bool = False, digest: Digest | None = None) -> None:
        if not isinstance(data, bytes | memoryview):
            data = b"".join(data)
        if self.fail_after is not None and self.written + len(data) > self.fail_after:
            room = self.fail_after - self.written
            if room > 0:
                await self.real.write(data[:room], digest=digest)
                self.written += room
            self._look_at_temp_files()
            raise self._error(self.write_errno)
        await self.real.write(data, final=final, digest=digest)
        self.written += len(data)
        self._look_at_temp_files()

    async def commit(self, key: str, *, sync_dir: bool = True) -> None:
        if self.commit_errno is not None:
            self._look_at_temp_files()
            raise self._error(self.commit_errno)
        await self.real.commit(key, sync_dir=sync_dir)
        self.committed = key

    def placer(self, key: str) -> Callable[[], None]:
        """What the group committer calls (in its thread) to move the file into place."""
        real = self.real.placer(key)

        def place() -> None:
            if self.commit_errno is not None:
                self._look_at_temp_files()
                raise self._error(self.commit_errno)
            real()
            self.committed = key

        return place

    async def abort(self) -> None:
        self.aborted = True
        await self.real.abort()


def spy_on_uploads(monkeypatch: pytest.MonkeyPatch, services: Services, **options: Any) -> list[SpySink]:
    """Replace ``services.storage.open_upload`` with a factory of :class:`SpySink` (returned list).

    The spy reads the temp file's size after each write, so the sinks write buffered: a direct
    write (:mod:`filejobs.direct_io`) stages the bytes and writes them in the background, and the
    size would depend on timing. ``tests/uploads/test_direct_io.py`` covers that path's failures."""
    monkeypatch.setattr(DirectWriter, "open", classmethod(lambda cls, fd, offset: None))
    sinks: list[SpySink] = []
    real_open = services.storage.open_upload
    tmp_dir = services.storage.root / "tmp"

    def open_upload() -> SpySink:
        sink = SpySink(real_open(), tmp_dir, **options)
        sinks.append(sink)
        return sink

    monkeypatch.setattr(services.storage, "open_upload", open_upload)
    return sinks


def run_create_job(
    services: Services, body: AsyncIterator[bytes], headers: dict[str, str] | None = None
) -> Any:
    """Call create_job directly (outside the app's loop) with an async-generator body."""
    return asyncio.run(
        create_job(
            db=services.db,
            storage=services.storage,
            registry=services.registry,
            settings=services.settings,
            headers=headers if headers is not None else MULTIPART,
            body=body,
        )
    )
