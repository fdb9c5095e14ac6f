"""POST /v1/jobs: every answer of the upload path, and that a failed upload leaves nothing behind.

Raw bodies are built here (fixed boundary) so malformed and hostile requests can be sent as-is;
``asgi_post`` drives the app with a body that arrives in chunks (or stops with a disconnect), which
the TestClient cannot do because it reads the whole request body before calling the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hashlib
import json
import os
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.errors import ClientGone, ServiceUnavailable, Unprocessable
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.submit import create_job
from filejobs.services import Services
from filejobs.shutdown import RETRY_AFTER, Shutdown
from filejobs.storage import Buffers, UploadSink
from filejobs.uploads import WRITE_CHUNK, WRITES_IN_FLIGHT, Limits, receive_upload
from tests.conftest import files_under, make_settings, upload
from tests.test_sniff import png_bytes

MiB = 1024 * 1024
BOUNDARY = "filejobs-test-boundary-7d3f"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
PNG = png_bytes()
SLEEP_DEFAULTS = {"seconds": 1.0, "steps": 10, "ignore_cancel": False}

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
    return data_dir / "uploads" / job_id


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


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """``make_app(max_upload_bytes=...)``: an app with its own settings and data dir, torn down after."""
    with contextlib.ExitStack() as stack:
        count = 0

        def factory(*, raise_server_exceptions: bool = True, **overrides: Any) -> App:
            nonlocal count
            count += 1
            data_dir = tmp_path / f"app{count}" / "data"
            dispatcher = InMemoryDispatcher()
            app = create_app(make_settings(data_dir, **overrides), dispatcher=dispatcher)
            client = stack.enter_context(TestClient(app, raise_server_exceptions=raise_server_exceptions))
            return App(client, data_dir, dispatcher)

        yield factory


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

    def _error(self, code: int) -> OSError:
        # Like the real thing, the error names a server path: it must not reach the client.
        return OSError(code, os.strerror(code), str(self.tmp_dir / "upload.part"))

    def _look_at_temp_files(self) -> None:
        sizes = [p.stat().st_size for p in self.tmp_dir.iterdir()]
        self.largest_temp_file = max([self.largest_temp_file, *sizes])

    async def write(self, data: Buffers, *, final: bool = False) -> None:
        if not isinstance(data, bytes | memoryview):
            data = b"".join(data)
        if self.fail_after is not None and self.written + len(data) > self.fail_after:
            room = self.fail_after - self.written
            if room > 0:
                await self.real.write(data[:room])
                self.written += room
            self._look_at_temp_files()
            raise self._error(self.write_errno)
        await self.real.write(data, final=final)
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
    """Replace ``services.storage.open_upload`` with a factory of :class:`SpySink` (returned list)."""
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


# ==== 202 =======================================================================================


def test_accepted_upload_answers_202_with_location_retry_after_and_etag(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    content = b"one two\nthree\n"
    response = upload(client, content, name="notes.txt")

    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    job = response.json()
    job_id = job["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    assert response.headers["retry-after"].isdigit()
    etag = response.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert len(etag) > 2

    assert job["status"] == "queued"
    assert job["processor"] == "inspect"
    assert job["params"] == {}
    assert job["file"] == {
        "name": "notes.txt",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "content_type": "text/plain",
    }
    assert job["progress"] == 0.0
    assert job["message"] is None
    assert job["attempts"] == 0
    assert job["error"] is None
    assert job["result"] is None
    assert datetime.fromisoformat(job["created_at"]).tzinfo is not None
    assert job["started_at"] is None
    assert job["finished_at"] is None
    assert job["links"] == {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"}
    assert not {"storage_key", "declared_content_type", "lease_owner"} & job.keys()

    # The row committed before the answer; the job is dispatched after it, exactly once.
    again = client.get(response.headers["location"])
    assert again.status_code == 200
    assert again.json() == job
    assert again.headers["etag"] == etag
    assert dispatcher.submitted == [job_id]
    assert [item["id"] for item in client.get("/v1/jobs").json()["items"]] == [job_id]

    # The file is committed under data/uploads/<id>, byte for byte; no temp file remains.
    assert files_under(data_dir) == [stored_upload(data_dir, job_id)]
    assert stored_upload(data_dir, job_id).read_bytes() == content


@pytest.mark.parametrize(
    ("content", "declared", "name", "sniffed"),
    [
        (PNG, "text/plain", "photo.txt", "image/png"),
        (PNG, "application/octet-stream", "photo", "image/png"),
        (b"just some words\n", "image/png", "fake.png", "text/plain"),
        (b'{"a": [1, 2]}', "text/plain", "data.txt", "application/json"),
        (b"id,name\n1,ann\n2,bob\n", "application/pdf", "table.pdf", "text/csv"),
    ],
    ids=["png-declared-text", "png-no-extension", "text-declared-png", "json", "csv"],
)
def test_content_type_is_sniffed_not_taken_from_the_client(
    client: TestClient, data_dir: Path, content: bytes, declared: str, name: str, sniffed: str
) -> None:
    response = upload(client, content, name=name, content_type=declared)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["content_type"] == sniffed
    assert job["file"]["name"] == name
    assert stored_upload(data_dir, job["id"]).read_bytes() == content


def test_binary_content_spanning_write_chunks_is_stored_exactly(client: TestClient, data_dir: Path) -> None:
    # Random bytes plus near-misses of the boundary: the parser must not cut the file at them.
    near_misses = b"\r\n--" + BOUNDARY[:-1].encode() + b"X" + b"\r\n--" + BOUNDARY.encode() + b"-"
    content = random.Random(42).randbytes(3 * WRITE_CHUNK + 12345) + near_misses + b"\r\n-\r\n--"
    response = client.post(
        "/v1/jobs",
        content=multipart(file_part(content, "blob.bin", "application/octet-stream")),
        headers=MULTIPART,
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["size"] == len(content)
    assert job["file"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert job["file"]["content_type"] == "application/octet-stream"
    stored = stored_upload(data_dir, job["id"])
    assert stored.stat().st_size == len(content)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == job["file"]["sha256"]
    assert files_under(data_dir) == [stored]


def test_streamed_body_in_small_chunks_is_stored_exactly(client: TestClient, data_dir: Path) -> None:
    content = random.Random(7).randbytes(2 * WRITE_CHUNK + 999)
    body = multipart(part("processor", "inspect"), file_part(content, "blob.bin"))
    # Odd chunk sizes split the boundary and the part headers across chunks.
    status, headers, raw = asgi_post(client, chunked(body, 7919), MULTIPART)
    assert status == 202, raw
    job = json.loads(raw)
    assert headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["file"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert stored_upload(data_dir, job["id"]).read_bytes() == content
    assert files_under(data_dir) == [stored_upload(data_dir, job["id"])]


@pytest.mark.parametrize("order", ["fields-first", "fields-last", "file-between"])
def test_processor_and_params_before_or_after_the_file(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, order: str
) -> None:
    processor = part("processor", "sleep")
    params = part("params", json.dumps({"seconds": 0.5, "steps": 3}))
    the_file = file_part()
    parts = {
        "fields-first": (processor, params, the_file),
        "fields-last": (the_file, processor, params),
        "file-between": (params, the_file, processor),
    }[order]
    response = client.post("/v1/jobs", content=multipart(*parts), headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["processor"] == "sleep"
    assert job["params"] == {"seconds": 0.5, "steps": 3, "ignore_cancel": False}
    assert client.get(f"/v1/jobs/{job['id']}").json()["params"] == job["params"]
    assert dispatcher.submitted == [job["id"]]
    assert files_under(data_dir) == [stored_upload(data_dir, job["id"])]


@pytest.mark.parametrize(
    "params", [None, "", "{}", "  {}  "], ids=["absent", "empty", "empty-object", "spaces"]
)
def test_params_defaults_are_filled_in_and_stored(client: TestClient, params: str | None) -> None:
    parts = [part("processor", "sleep")]
    if params is not None:
        parts.append(part("params", params))
    response = client.post("/v1/jobs", content=multipart(*parts, file_part()), headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["params"] == SLEEP_DEFAULTS
    assert client.get(f"/v1/jobs/{job['id']}").json()["params"] == SLEEP_DEFAULTS


def test_partial_params_are_completed_with_defaults(client: TestClient) -> None:
    response = upload(client, processor="sleep", params={"steps": 4})
    assert response.status_code == 202, response.text
    assert response.json()["params"] == {**SLEEP_DEFAULTS, "steps": 4}


@pytest.mark.parametrize("processor", [None, ""], ids=["absent", "empty"])
def test_processor_defaults_to_inspect(client: TestClient, processor: str | None) -> None:
    parts = [] if processor is None else [part("processor", processor)]
    response = client.post("/v1/jobs", content=multipart(*parts, file_part()), headers=MULTIPART)
    assert response.status_code == 202, response.text
    assert response.json()["processor"] == "inspect"
    assert response.json()["params"] == {}


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/form-data; boundary="{BOUNDARY}"',
        f"Multipart/Form-Data; boundary={BOUNDARY}",
        f"multipart/form-data; charset=utf-8; boundary={BOUNDARY}",
    ],
    ids=["quoted-boundary", "mixed-case", "extra-parameter"],
)
def test_content_type_variants_are_accepted(client: TestClient, content_type: str) -> None:
    response = client.post("/v1/jobs", content=multipart(file_part()), headers={"content-type": content_type})
    assert response.status_code == 202, response.text


def test_an_epilogue_after_the_closing_boundary_is_ignored(client: TestClient, data_dir: Path) -> None:
    response = client.post(
        "/v1/jobs", content=multipart(file_part(b"data\n")) + b"trailing epilogue\r\n", headers=MULTIPART
    )
    assert response.status_code == 202, response.text
    assert stored_upload(data_dir, response.json()["id"]).read_bytes() == b"data\n"


def test_limits_are_inclusive(make_app: Callable[..., App]) -> None:
    app = make_app(max_upload_bytes=1000, max_fields=2, max_field_bytes=40)
    params = json.dumps({"seconds": 0}).ljust(40)
    assert len(params) == 40
    content = b"x" * 1000
    body = multipart(part("processor", "sleep"), part("params", params), file_part(content))
    response = app.client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["size"] == 1000
    assert job["params"]["seconds"] == 0
    assert files_under(app.data_dir) == [stored_upload(app.data_dir, job["id"])]


# ==== 415: not multipart ========================================================================


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"json": {"file": "aGVsbG8="}}, "application/json"),
        ({"data": {"processor": "inspect", "file": "hello"}}, "application/x-www-form-urlencoded"),
        ({"content": b"hello world"}, "multipart/form-data"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, "text/plain"),
        (
            {
                "content": multipart(file_part()),
                "headers": {"content-type": f"multipart/mixed; boundary={BOUNDARY}"},
            },
            "multipart/mixed",
        ),
    ],
    ids=["json", "form-urlencoded", "no-content-type", "text-plain", "multipart-mixed"],
)
def test_non_multipart_bodies_are_415(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, kwargs: dict[str, Any], detail: str
) -> None:
    response = client.post("/v1/jobs", **kwargs)
    assert_problem(response, 415, data_dir, detail=detail)
    assert_nothing_left(client, data_dir, dispatcher)


def test_missing_content_type_really_has_no_header(client: TestClient, data_dir: Path) -> None:
    response = client.post("/v1/jobs", content=b"raw bytes")
    assert "content-type" not in response.request.headers
    assert_problem(response, 415, data_dir, detail="multipart/form-data")


# ==== 400: malformed multipart, bad Content-Length ==============================================


#: Chunks handed to the writer before a failure so that at least one write has surely completed:
#: the writer takes chunk k only after writing chunk k-1, and at most WRITES_IN_FLIGHT wait queued.
SURELY_WRITTEN = WRITES_IN_FLIGHT + 3


def _big_truncated_body() -> bytes:
    # Several write chunks arrive before the body stops: streamed, a temp file exists by then.
    return multipart(file_part(b"z" * (SURELY_WRITTEN * WRITE_CHUNK + 10)), close=False)


MALFORMED: list[tuple[str, bytes, dict[str, str], str]] = [
    ("no-boundary", multipart(file_part()), {"content-type": "multipart/form-data"}, "boundary"),
    (
        "empty-boundary",
        multipart(file_part()),
        {"content-type": "multipart/form-data; boundary="},
        "boundary",
    ),
    (
        "boundary-over-70",
        b"--" + b"b" * 71 + b"\r\n",
        {"content-type": "multipart/form-data; boundary=" + "b" * 71},
        "boundary",
    ),
    ("garbage", b"this is not a multipart body at all", MULTIPART, "malformed"),
    ("preamble-garbage-before-boundary", b"junk\r\n" + multipart(file_part()), MULTIPART, "malformed"),
    ("bad-header-line", f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n".encode(), MULTIPART, "malformed"),
    ("empty-body", b"", MULTIPART, "closing boundary"),
    ("truncated-no-closing-boundary", multipart(file_part(), close=False), MULTIPART, "closing boundary"),
    ("truncated-mid-file", multipart(file_part(b"abcdef" * 100))[:200], MULTIPART, "closing boundary"),
    ("truncated-in-headers", f"--{BOUNDARY}\r\nContent-Disposition: form-da".encode(), MULTIPART, "closing"),
    ("truncated-big-file", _big_truncated_body(), MULTIPART, "closing boundary"),
    (
        "part-without-content-disposition",
        multipart(part(None, "hi", disposition=b"Content-Type: text/plain\r\n")),
        MULTIPART,
        "Content-Disposition",
    ),
    (
        "content-disposition-without-name",
        multipart(part(None, "hi", filename="a.txt")),
        MULTIPART,
        "no name",
    ),
    (
        "too-many-part-headers",
        multipart(
            part(
                "file", "hi", filename="a.txt", extra_headers=b"".join(b"X-H%d: v\r\n" % i for i in range(8))
            )
        ),
        MULTIPART,
        "header",
    ),
    (
        "part-header-too-big",
        multipart(part("file", "hi", filename="a.txt", extra_headers=b"X-Big: " + b"v" * 9000 + b"\r\n")),
        MULTIPART,
        "header",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "detail"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_multipart_is_400(
    client: TestClient,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    body: bytes,
    headers: dict[str, str],
    detail: str,
) -> None:
    response = client.post("/v1/jobs", content=body, headers=headers)
    problem = assert_problem(response, 400, data_dir)
    assert detail.lower() in problem["detail"].lower()
    assert_nothing_left(client, data_dir, dispatcher)


def test_truncated_body_removes_the_partly_written_temp_file(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sinks = spy_on_uploads(monkeypatch, services)
    body = _big_truncated_body()
    status, headers, raw = asgi_post(client, chunked(body, 256 * 1024), MULTIPART)
    assert_problem(as_response(status, headers, raw), 400, data_dir, detail="closing boundary")
    [sink] = sinks
    assert sink.largest_temp_file >= WRITE_CHUNK  # it really was on disk ...
    assert sink.aborted
    assert sink.committed is None
    assert_nothing_left(client, data_dir, dispatcher)  # ... and now it is gone


@pytest.mark.parametrize("value", ["-1", "-100", "abc", "1.5", "1e3", "0x10", "", " 12", "+5"])
def test_invalid_content_length_is_400(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, value: str
) -> None:
    response = client.post(
        "/v1/jobs", content=multipart(file_part()), headers={**MULTIPART, "content-length": value}
    )
    assert response.request.headers["content-length"] == value
    assert_problem(response, 400, data_dir, detail="Content-Length")
    assert_nothing_left(client, data_dir, dispatcher)


def test_non_ascii_digit_content_length_is_400_not_500(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    # "\xb2" (superscript two, one latin-1 byte) is a digit to str.isdigit() but not to int().
    # The TestClient re-encodes header values, so the raw byte is sent through asgi_post.
    status, headers, raw = asgi_post(
        client, [multipart(file_part())], {**MULTIPART, "content-length": "\xb2"}
    )
    assert_problem(as_response(status, headers, raw), 400, data_dir, detail="Content-Length")
    assert_nothing_left(client, data_dir, dispatcher)


# ==== 413: limits ===============================================================================


def test_content_length_over_the_limit_is_refused_before_reading(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(max_upload_bytes=1000, max_fields=1, max_field_bytes=100)
    sinks = spy_on_uploads(monkeypatch, app.services)
    body = multipart(file_part(b"x" * (100 * 1024)))
    response = app.client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert int(response.request.headers["content-length"]) == len(body)
    problem = assert_problem(response, 413, app.data_dir, detail="at most 1000 bytes")
    assert problem["max_file_bytes"] == 1000
    assert sinks == []  # refused from the header: no upload was even opened
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_huge_declared_content_length_is_413(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    response = client.post(
        "/v1/jobs", content=multipart(file_part()), headers={**MULTIPART, "content-length": str(10**15)}
    )
    assert_problem(response, 413, data_dir)
    assert_nothing_left(client, data_dir, dispatcher)


def test_file_over_the_limit_without_content_length_is_413(make_app: Callable[..., App]) -> None:
    app = make_app(max_upload_bytes=1000)
    body = multipart(file_part(b"y" * 1001))
    response = app.client.post("/v1/jobs", content=chunked(body, 300), headers=MULTIPART)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    problem = assert_problem(response, 413, app.data_dir, detail="larger than the limit of 1000 bytes")
    assert problem["max_file_bytes"] == 1000
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_file_over_the_limit_behind_a_lying_small_content_length_is_413(make_app: Callable[..., App]) -> None:
    app = make_app(max_upload_bytes=1000)
    body = multipart(file_part(b"y" * 5000))
    response = app.client.post("/v1/jobs", content=body, headers={**MULTIPART, "content-length": "300"})
    assert response.request.headers["content-length"] == "300"
    assert_problem(response, 413, app.data_dir, detail="larger than the limit")
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_streamed_file_over_the_limit_removes_the_partial_file(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(max_upload_bytes=SURELY_WRITTEN * MiB)
    sinks = spy_on_uploads(monkeypatch, app.services)
    body = multipart(file_part(b"q" * ((SURELY_WRITTEN + 1) * MiB)))
    status, headers, raw = asgi_post(app.client, chunked(body, 256 * 1024), MULTIPART)
    assert_problem(as_response(status, headers, raw), 413, app.data_dir, detail="larger than the limit")
    [sink] = sinks
    assert sink.written >= WRITE_CHUNK
    assert sink.largest_temp_file >= WRITE_CHUNK  # part of the file had reached the disk
    assert sink.aborted
    assert sink.committed is None
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_too_many_parts_is_413(client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher) -> None:
    max_fields = client.app_state["services"].settings.max_fields
    fields = [part(f"field{i}", "v") for i in range(max_fields + 1)]
    response = client.post("/v1/jobs", content=multipart(*fields, file_part()), headers=MULTIPART)
    assert_problem(response, 413, data_dir, detail="Too many form parts")
    assert_nothing_left(client, data_dir, dispatcher)


def test_one_part_over_max_fields_plus_file_is_413(make_app: Callable[..., App]) -> None:
    app = make_app(max_fields=2)
    body = multipart(part("processor", "inspect"), part("params", "{}"), file_part(), part("extra", "x"))
    response = app.client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert_problem(response, 413, app.data_dir, detail="at most 2 fields and one file")
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


@pytest.mark.parametrize("where", ["before-file", "after-file"])
def test_oversized_form_field_is_413(make_app: Callable[..., App], where: str) -> None:
    app = make_app(max_field_bytes=100)
    params = part("params", "{" + " " * 200 + "}")
    parts = (params, file_part()) if where == "before-file" else (file_part(), params)
    response = app.client.post("/v1/jobs", content=multipart(*parts), headers=MULTIPART)
    assert_problem(response, 413, app.data_dir, detail="'params' is larger than 100 bytes")
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_endless_epilogue_is_cut_off_at_the_body_limit(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without Content-Length, bytes after the closing boundary must not stream in without end.
    app = make_app(max_upload_bytes=1000, max_fields=1, max_field_bytes=100)
    consumed = 0

    def body() -> Iterator[bytes]:
        nonlocal consumed
        yield multipart(file_part(b"small file\n"))
        for _ in range(10_000):  # up to 640 MiB of epilogue
            consumed += 1
            yield b"e" * 65536

    status, headers, raw = asgi_post(app.client, body(), MULTIPART)
    assert_problem(as_response(status, headers, raw), 413, app.data_dir)
    assert consumed <= 4  # stopped right after the body limit (~66 KB here), not at the end
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


# ==== 422: the form =============================================================================


UNPROCESSABLE: list[tuple[str, list[bytes], str]] = [
    ("missing-file-field", [part("processor", "inspect")], "no 'file' field"),
    ("no-parts-at-all", [], "no 'file' field"),
    (
        "file-under-another-name",
        [part("upload", b"data", filename="a.txt")],
        "Unknown form field(s): upload. Send the file in the 'file' field",
    ),
    (
        "binary-file-under-another-name",
        [part("upload", b"\xff\xd8\xff\xe0 a JPEG", filename="photo.jpg"), file_part()],
        "Unknown form field(s): upload. Send the file in the 'file' field",
    ),
    (
        "binary-field-under-another-name",
        [part("upload", b"\xff\xd8\xff\xe0 a JPEG"), file_part()],
        "Unknown form field(s): upload. Send the file in the 'file' field",
    ),
    # curl -F file=photo.jpg (no '@'): the text "photo.jpg", not a file.
    ("file-field-without-filename", [part("file", "photo.jpg")], "not a file: its part has no filename"),
    ("file-field-without-filename-says-how", [part("file", "photo.jpg")], "-F file=@path"),
    ("empty-file", [file_part(b"")], "empty"),
    ("two-file-fields", [file_part(b"one"), file_part(b"two")], "exactly one file"),
    ("unknown-field-before-file", [part("colour", "red"), file_part()], "Unknown form field(s): colour"),
    ("unknown-field-after-file", [file_part(), part("colour", "red")], "Unknown form field(s): colour"),
    ("duplicate-field", [part("processor", "inspect"), part("processor", "inspect"), file_part()], "twice"),
    ("non-utf8-field", [part("processor", b"\xff\xfe\xfd"), file_part()], "not UTF-8"),
    ("params-not-json", [part("params", "{seconds: 1"), file_part()], "not valid JSON"),
    ("params-list", [part("processor", "sleep"), part("params", "[1, 2]"), file_part()], "JSON object"),
    ("params-string", [part("processor", "sleep"), part("params", '"x"'), file_part()], "JSON object"),
    ("params-number", [part("processor", "sleep"), part("params", "5"), file_part()], "JSON object"),
    ("params-null", [part("processor", "sleep"), part("params", "null"), file_part()], "JSON object"),
    ("params-for-no-params-processor", [part("params", '{"x": 1}'), file_part()], "Invalid params"),
    # valid JSON that json.loads itself fails on (RecursionError, ValueError), or that nests deeper
    # than is stored: 422, never 500
    (
        "params-nested-1000-deep",
        [part("processor", "sleep"), part("params", '{"a":' * 1000 + "1" + "}" * 1000), file_part()],
        "'params' is nested too deeply",
    ),
    (
        "params-nested-33-deep",
        [part("processor", "sleep"), part("params", '{"a":' * 33 + "1" + "}" * 33), file_part()],
        "at most 32 levels",
    ),
    (
        "params-integer-of-5000-digits",
        [file_part(), part("processor", "sleep"), part("params", '{"steps": ' + "7" * 5000 + "}")],
        "'params' holds an integer of more than 4300 digits",
    ),
]


@pytest.mark.parametrize(
    ("parts", "detail"), [u[1:] for u in UNPROCESSABLE], ids=[u[0] for u in UNPROCESSABLE]
)
def test_bad_forms_are_422(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, parts: list[bytes], detail: str
) -> None:
    response = client.post("/v1/jobs", content=multipart(*parts), headers=MULTIPART)
    assert_problem(response, 422, data_dir, detail=detail)
    assert_nothing_left(client, data_dir, dispatcher)


@pytest.mark.parametrize("where", ["before-file", "after-file"])
def test_unknown_processor_is_422_and_lists_the_available_ones(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, where: str
) -> None:
    processor = part("processor", "nope")
    parts = (processor, file_part()) if where == "before-file" else (file_part(), processor)
    response = client.post("/v1/jobs", content=multipart(*parts), headers=MULTIPART)
    problem = assert_problem(response, 422, data_dir, detail="Unknown processor 'nope'")
    available = sorted(p["name"] for p in client.get("/v1/processors").json()["items"])
    assert problem["processors"] == available
    assert {"inspect", "sleep", "text-only"} <= set(available)
    for name in available:
        assert name in problem["detail"]
    assert_nothing_left(client, data_dir, dispatcher)


def test_params_failing_the_processor_schema_are_422_with_errors(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    response = upload(client, processor="sleep", params={"seconds": -1})
    problem = assert_problem(response, 422, data_dir, detail="Invalid params for processor 'sleep'")
    [error] = problem["errors"]
    assert error["loc"] == ["seconds"]
    assert error["type"] == "greater_than_equal"
    assert error["msg"]
    assert "input" not in error
    assert "url" not in error
    assert_nothing_left(client, data_dir, dispatcher)


def test_params_with_an_unknown_key_are_422(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    response = upload(client, processor="sleep", params={"seconds": 0, "bogus": True})
    problem = assert_problem(response, 422, data_dir)
    assert [e["loc"] for e in problem["errors"]] == [["bogus"]]
    assert_nothing_left(client, data_dir, dispatcher)


# ==== 415: processor does not accept the sniffed type ===========================================


def test_processor_refusing_the_sniffed_type_is_415(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    # Declared as text/plain with a .txt name: the sniffed type decides, and text-only refuses it.
    response = upload(client, PNG, name="not-an-image.txt", content_type="text/plain", processor="text-only")
    problem = assert_problem(response, 415, data_dir, detail="does not accept image/png")
    assert problem["content_type"] == "image/png"
    assert problem["accepts"] == ["text/plain"]
    assert_nothing_left(client, data_dir, dispatcher)


def test_processor_accepting_the_sniffed_type_despite_a_wrong_declared_type(client: TestClient) -> None:
    response = upload(client, b"plain words\n", name="x.png", content_type="image/png", processor="text-only")
    assert response.status_code == 202, response.text
    assert response.json()["file"]["content_type"] == "text/plain"


# ==== fail fast =================================================================================


def test_bad_processor_before_the_file_is_refused_before_the_file_streams(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    # The file part is followed by garbage and never closed: were the body read to its end, the
    # answer would be 400 (malformed). It is 422: the refusal came when the file part began.
    body = multipart(part("processor", "nope"), close=False)
    body += file_head("a.txt")
    body += b"file bytes \x00\x01 then no boundary at all"
    response = client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert_problem(response, 422, data_dir, detail="Unknown processor 'nope'")
    assert_nothing_left(client, data_dir, dispatcher)


def _consumption_recording_body(chunks: list[bytes], consumed: list[int]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        for index, chunk in enumerate(chunks):
            consumed.append(index)
            yield chunk

    return body()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ([part("processor", "nope")], "Unknown processor 'nope'"),
        ([part("processor", "sleep"), part("params", '{"seconds": -1}')], "Invalid params"),
        ([part("colour", "red")], "Unknown form field"),
        ([part("processor", "inspect"), part("params", "not json")], "not valid JSON"),
    ],
    ids=["unknown-processor", "bad-params", "unknown-field", "params-not-json"],
)
def test_create_job_fails_fast_on_fields_sent_before_the_file(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
    fields: list[bytes],
    error: str,
) -> None:
    sinks = spy_on_uploads(monkeypatch, services)
    head = b"".join(fields) + file_head("big.bin")
    file_chunks = [b"f" * WRITE_CHUNK for _ in range(4)]
    chunks = [head, *file_chunks, f"\r\n--{BOUNDARY}--\r\n".encode()]
    consumed: list[int] = []

    with pytest.raises(Unprocessable, match=error):
        run_create_job(services, _consumption_recording_body(chunks, consumed))

    assert consumed == [0]  # not one chunk of the file was pulled
    assert all(sink.written == 0 for sink in sinks)
    assert_nothing_left(client, data_dir, dispatcher)


def test_params_before_the_file_wait_for_a_processor_sent_after_it(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    # Judged early against the default processor, these params would be refused; they are for
    # "sleep", which comes after the file.
    chunks = [
        part("params", '{"seconds": 0, "steps": 2}') + file_part(b"x" * 10, "a.txt"),
        part("processor", "sleep") + f"--{BOUNDARY}--\r\n".encode(),
    ]
    consumed: list[int] = []
    job = run_create_job(services, _consumption_recording_body(chunks, consumed))
    assert consumed == [0, 1]
    assert job.processor == "sleep"
    assert job.params == {"seconds": 0.0, "steps": 2, "ignore_cancel": False}
    assert files_under(data_dir) == [stored_upload(data_dir, job.id)]


def test_create_job_reads_the_whole_file_when_the_bad_field_comes_after_it(
    client: TestClient, services: Services, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    chunks = [
        file_head("a"),
        b"f" * WRITE_CHUNK,
        b"f" * WRITE_CHUNK,
        b"\r\n" + part("processor", "nope") + f"--{BOUNDARY}--\r\n".encode(),
    ]
    consumed: list[int] = []
    with pytest.raises(Unprocessable, match="Unknown processor"):
        run_create_job(services, _consumption_recording_body(chunks, consumed))
    assert consumed == [0, 1, 2, 3]
    assert_nothing_left(client, data_dir, dispatcher)


def test_create_job_with_a_generator_body_succeeds(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    content = b"abc" * 500_000
    body = multipart(part("processor", "upper"), file_part(content, "abc.txt"))
    job = run_create_job(services, agen(chunked(body, 100_000)))
    assert job.status == "queued"
    assert job.processor == "upper"
    assert job.file_size == len(content)
    assert job.file_sha256 == hashlib.sha256(content).hexdigest()
    assert job.file_content_type == "text/plain"
    assert job.declared_content_type == "text/plain"
    assert stored_upload(data_dir, job.id).read_bytes() == content
    assert client.get(f"/v1/jobs/{job.id}").json()["file"]["sha256"] == job.file_sha256


# ==== 507 and other storage failures ============================================================


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
@pytest.mark.parametrize("fail_after", [0, WRITE_CHUNK + 100], ids=["first-byte", "mid-file"])
def test_disk_full_while_writing_is_507(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    fail_after: int,
) -> None:
    sinks = spy_on_uploads(monkeypatch, services, fail_after=fail_after, write_errno=code)
    content = random.Random(3).randbytes(3 * WRITE_CHUNK)
    response = upload(client, content, name="big.bin", content_type="application/octet-stream")
    assert_problem(response, 507, data_dir, detail="no room")
    [sink] = sinks
    assert sink.written == fail_after
    assert sink.largest_temp_file == fail_after  # the partial file was on disk ...
    assert sink.aborted
    assert sink.committed is None
    assert_nothing_left(client, data_dir, dispatcher)  # ... and is gone


def test_disk_full_while_writing_a_streamed_body_is_507(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The write that fails runs while the next chunk is parsed; its error must still surface.
    sinks = spy_on_uploads(monkeypatch, services, fail_after=2 * WRITE_CHUNK)
    body = multipart(file_part(b"w" * (5 * WRITE_CHUNK)))
    status, headers, raw = asgi_post(client, chunked(body, 128 * 1024), MULTIPART)
    assert_problem(as_response(status, headers, raw), 507, data_dir)
    [sink] = sinks
    assert sink.largest_temp_file == 2 * WRITE_CHUNK
    assert sink.aborted
    assert_nothing_left(client, data_dir, dispatcher)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_disk_full_at_commit_is_507(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    sinks = spy_on_uploads(monkeypatch, services, commit_errno=code)
    content = b"c" * (WRITE_CHUNK + 5)
    response = upload(client, content)
    assert_problem(response, 507, data_dir, detail="no room")
    [sink] = sinks
    assert sink.largest_temp_file == len(content)  # fully written, then the commit failed
    assert sink.aborted
    assert sink.committed is None
    assert_nothing_left(client, data_dir, dispatcher)


def test_other_write_errors_are_a_500_problem_without_paths(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sinks = spy_on_uploads(monkeypatch, services, fail_after=10, write_errno=errno.EIO)
    response = upload(client, b"x" * 1000)
    problem = assert_problem(response, 500, data_dir)
    assert "Input/output error" not in problem["detail"]
    assert sinks[0].aborted
    assert_nothing_left(client, data_dir, dispatcher)


def test_a_failed_row_insert_removes_the_committed_file(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class BrokenDatabase:
        def write(self) -> Any:
            raise RuntimeError(f"database is locked at {data_dir}/filejobs.db")

    # The group committer's transaction fails: every upload of the batch gets the error.
    monkeypatch.setattr(services.committer, "db", BrokenDatabase())
    response = upload(client, b"content\n")
    assert_problem(response, 500, data_dir)
    assert_nothing_left(client, data_dir, dispatcher)


# ==== client disconnect =========================================================================


def test_client_gone_mid_body_propagates_and_leaves_nothing(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sinks = spy_on_uploads(monkeypatch, services)
    body = multipart(part("processor", "inspect"), file_part(b"d" * ((SURELY_WRITTEN + 1) * WRITE_CHUNK)))

    async def disconnecting() -> AsyncIterator[bytes]:
        sent = 0
        for chunk in chunked(body, 256 * 1024):
            if sent >= SURELY_WRITTEN * WRITE_CHUNK + 1000:
                raise ClientGone()
            sent += len(chunk)
            yield chunk

    with pytest.raises(ClientGone):
        run_create_job(services, disconnecting())
    [sink] = sinks
    assert sink.largest_temp_file >= WRITE_CHUNK
    assert sink.aborted
    assert sink.committed is None
    assert_nothing_left(client, data_dir, dispatcher)


@pytest.mark.parametrize("when", ["in-headers", "mid-file"])
def test_client_disconnect_through_the_route_leaves_nothing(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, when: str
) -> None:
    body = multipart(file_part(b"d" * (3 * WRITE_CHUNK)))
    cut = 20 if when == "in-headers" else 2 * WRITE_CHUNK + 500
    status, _, raw = asgi_post(client, [*chunked(body[:cut], 64 * 1024), DISCONNECT], MULTIPART)
    assert status == 400  # nobody is listening; what matters is what is left
    assert raw == b""
    assert_nothing_left(client, data_dir, dispatcher)


# ==== filenames through the API =================================================================


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("C:\\x\\y.txt", "y.txt"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("x" * 300, "x" * 255),
        ("€" * 100, "€" * 85),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
        ("..", "upload"),
        ("résumé \u2013 final.pdf", "résumé \u2013 final.pdf"),
    ],
    ids=[
        "dotdot",
        "absolute",
        "windows",
        "windows-dotdot",
        "bidi",
        "300-bytes",
        "multibyte",
        "300-bytes-keeps-extension",
        "dots",
        "utf8",
    ],
)
def test_client_filenames_are_sanitised(
    client: TestClient, data_dir: Path, filename: str, expected: str
) -> None:
    response = upload(client, name=filename)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["name"] == expected
    assert len(expected.encode("utf-8")) <= 255
    # The name is metadata only: the stored file has the server's name.
    assert files_under(data_dir) == [stored_upload(data_dir, job["id"])]


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        (b'form-data; name="file"; filename="a\x07b\x1b[31mc.txt"', "ab[31mc.txt"),
        (b'form-data; name="file"; filename="tab\there.txt"', "tabhere.txt"),
        ('form-data; name="file"; filename="x\u202e\u2066y.txt"'.encode(), "xy.txt"),
        (b"form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.txt", "€.txt"),
        (b"form-data; name=\"file\"; filename*=UTF-8''..%2F..%2Fa%00b%0A.txt", "ab.txt"),
        (b'form-data; name="file"; filename="EUR.txt"; filename*=UTF-8\'\'%E2%82%AC.txt', "€.txt"),
        (b'form-data; name="file"; filename=""', "upload"),
        (b'form-data; name="file"; filename="\xff\xfe.txt"', "\ufffd\ufffd.txt"),
        (b'form-data; name="file"; filename="C:\\x\\y.txt"', "y.txt"),
        # aiohttp percent-encodes the name; browsers (WHATWG) encode '"', CR and LF.
        (b'form-data; name="file"; filename="caf%C3%A9%20menu.txt"', "caf\u00e9 menu.txt"),
        (b'form-data; name="file"; filename="say %22hi%22.txt"', 'say "hi".txt'),
        (b'form-data; name="file"; filename="two%0D%0Alines.txt"', "twolines.txt"),
        (
            'form-data; name="file"; filename="r\u00e9sum\u00e9 100%.txt"'.encode(),
            "r\u00e9sum\u00e9 100%.txt",
        ),
        (b'form-data; name="file"; filename="50%off %FF.txt"', "50%off %FF.txt"),
        (
            b'form-data; name="file"; filename="' + quote("\u00e9" * 200 + ".txt", safe="").encode() + b'"',
            "\u00e9" * 125 + ".txt",
        ),
    ],
    ids=[
        "control-chars",
        "tab",
        "bidi",
        "rfc2231",
        "rfc2231-path-and-controls",
        "rfc2231-wins-over-fallback",
        "empty",
        "invalid-utf8",
        "raw-backslashes",
        "aiohttp-percent-encoded",
        "whatwg-quotes",
        "whatwg-crlf",
        "raw-utf8-literal-percent",
        "percent-not-an-escape",
        "aiohttp-long-name-keeps-extension",
    ],
)
def test_raw_content_disposition_filenames_are_sanitised(
    client: TestClient, data_dir: Path, disposition: bytes, expected: str
) -> None:
    body = multipart(part(None, b"hi\n", disposition=b"Content-Disposition: " + disposition + b"\r\n"))
    response = client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["name"] == expected
    assert client.get(f"/v1/jobs/{job['id']}").json()["file"]["name"] == expected
    assert files_under(data_dir) == [stored_upload(data_dir, job["id"])]


# ==== memory ====================================================================================


def test_64_mib_generator_upload_completes_with_the_right_hash(client: TestClient, data_dir: Path) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    blocks = 64
    expected = hashlib.sha256()
    for _ in range(blocks):
        expected.update(block)

    def body() -> Iterator[bytes]:
        yield multipart(part("processor", "inspect"), close=False)
        yield file_head("big.bin")
        for _ in range(blocks):
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    response = client.post("/v1/jobs", content=body(), headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["size"] == blocks * MiB
    assert job["file"]["sha256"] == expected.hexdigest()
    stored = stored_upload(data_dir, job["id"])
    assert stored.stat().st_size == blocks * MiB
    digest = hashlib.sha256()
    with stored.open("rb") as handle:
        for chunk in iter(lambda: handle.read(4 * MiB), b""):
            digest.update(chunk)
    assert digest.hexdigest() == expected.hexdigest()


def test_streaming_64_mib_keeps_memory_bounded(client: TestClient, data_dir: Path) -> None:
    block = b"m" * MiB
    blocks = 64
    expected = hashlib.sha256()
    for _ in range(blocks):
        expected.update(block)

    def body() -> Iterator[bytes]:
        yield file_head("big.bin")
        for _ in range(blocks):
            yield block  # the same object every time: the body costs nothing to hold
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    tracemalloc.start()
    try:
        status, _, raw = asgi_post(client, body(), MULTIPART)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 202, raw
    job = json.loads(raw)
    assert job["file"]["size"] == blocks * MiB
    assert job["file"]["sha256"] == expected.hexdigest()
    # A few write buffers, never the file: far below its 64 MiB.
    assert peak < 16 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
    assert stored_upload(data_dir, job["id"]).stat().st_size == blocks * MiB


# ==== slow and stalled bodies (issue 14, item 6) ================================================


class CountingSink:
    """An upload sink that keeps nothing: counts the bytes written, and says when ``target`` are."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.job_id: str | None = None
        self.written = 0
        self.writes: list[int] = []
        self.reached = asyncio.Event()
        self.aborted = False

    async def write(self, data: Buffers, *, final: bool = False) -> None:
        size = len(data) if isinstance(data, bytes | memoryview) else sum(len(piece) for piece in data)
        self.written += size
        self.writes.append(size)
        if self.written >= self.target:
            self.reached.set()

    async def commit(self, key: str, *, sync_dir: bool = True) -> None:
        pass

    def placer(self, key: str) -> Callable[[], None]:
        return lambda: None

    async def abort(self) -> None:
        self.aborted = True


def receive(body: AsyncIterator[bytes], sink: UploadSink, **options: Any) -> Any:
    """:func:`filejobs.uploads.receive_upload` of ``body`` into ``sink`` (accepting any form field)."""
    limits = Limits(max_file_bytes=64 * MiB, max_fields=8, max_field_bytes=64 * 1024)
    return receive_upload(
        headers=MULTIPART,
        body=body,
        open_sink=lambda: sink,
        limits=limits,
        check_fields=lambda fields: None,
        field_names={"processor", "params"},
        **options,
    )


#: What a stalled upload may hold: the content-type sniffing sample (64 KiB) and small change.
STALLED_HOLDS = 192 * 1024


@pytest.mark.parametrize("sent_kib", [1000, 1024])
def test_a_stalled_upload_hands_what_it_sent_to_the_disk_and_holds_no_copy(sent_kib: int) -> None:
    """Headers and ~1 MiB of body, then nothing: what arrived is written while the body waits (not
    kept in a buffer until WRITE_CHUNK fills), and no copy stays in memory (nor with the writer)."""
    sent = sent_kib * 1024
    sink = CountingSink(target=sent)
    held: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        tracemalloc.start()
        try:
            baseline, _ = tracemalloc.get_traced_memory()
            yield file_head("slow.bin")
            for _ in range(sent // (64 * 1024)):
                yield os.urandom(64 * 1024)  # a new object each time, as a server's reads are
            yield os.urandom(sent % (64 * 1024))
            await asyncio.wait_for(sink.reached.wait(), HANG)  # the stall: no byte until written
            # ... and until the writer let go of them (it hashes in a thread after the write).
            deadline = time.monotonic() + HANG
            while time.monotonic() < deadline:
                gc.collect()
                held[:] = [tracemalloc.get_traced_memory()[0] - baseline]
                if held[0] < STALLED_HOLDS:
                    break
                await asyncio.sleep(0.01)
        finally:
            tracemalloc.stop()
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    async def run() -> Any:
        return await receive(body(), sink, idle_timeout=HANG)

    received = asyncio.run(run())
    assert received.size == sent
    assert sink.written == sent
    assert held[0] < STALLED_HOLDS, f"{held[0]} bytes held while stalled"


def test_a_body_that_sends_nothing_for_the_idle_timeout_gets_408_and_leaves_nothing(
    make_app: Callable[..., App],
) -> None:
    app = make_app(upload_idle_timeout=0.2)
    chunks = [file_head("stalled.bin"), b"s" * 300 * 1024, STALL]
    status, headers, body = asgi_post(app.client, chunks, MULTIPART)
    problem = assert_problem(as_response(status, headers, body), 408, app.data_dir, detail="sent nothing")
    assert problem["title"] == "Request Timeout"
    assert headers["connection"] == "close"
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_a_slow_body_is_not_cut_off_while_bytes_keep_coming() -> None:
    """Bytes that keep arriving (more slowly than the idle timeout lets a body pause) keep the
    upload alive however long it takes in total: each byte waits for the previous to be seen."""
    sink = CountingSink(target=0)
    pieces = 12

    async def body() -> AsyncIterator[bytes]:
        yield file_head("slow.bin")
        for index in range(pieces):
            sink.target, sink.reached = (index + 1) * 1024, asyncio.Event()
            yield b"x" * 1024
            await asyncio.wait_for(sink.reached.wait(), HANG)  # until the tick handed it over
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    async def run() -> Any:
        return await receive(body(), sink, idle_timeout=0.2)  # 12 ticks of 0.05 s at least: > 0.2 s

    received = asyncio.run(run())
    assert received.size == pieces * 1024
    assert not sink.aborted


def test_an_upload_still_receiving_at_the_shutdown_cutoff_gets_503_with_retry_after() -> None:
    sink = CountingSink(target=64 * 1024)
    shutdown = Shutdown()

    async def body() -> AsyncIterator[bytes]:
        yield file_head("big.bin")
        yield b"b" * 64 * 1024
        await asyncio.wait_for(sink.reached.wait(), HANG)
        shutdown.upload_deadline = asyncio.get_running_loop().time()  # SIGTERM, and its cutoff came
        for _ in range(1000):  # still sending, but not done
            yield b"b" * 1024
            await asyncio.sleep(0.01)
        pytest.fail("the upload was not ended at the shutdown's cutoff")

    async def run() -> Any:
        return await receive(body(), sink, idle_timeout=HANG, shutdown=shutdown)

    with pytest.raises(ServiceUnavailable) as raised:
        asyncio.run(run())
    assert raised.value.status == 503
    assert raised.value.headers == {"Retry-After": RETRY_AFTER, "Connection": "close"}
    assert "shutting down" in raised.value.detail
    assert sink.aborted
