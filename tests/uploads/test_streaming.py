"""POST /v1/jobs: streaming: bytes stored exactly across write chunks, memory bounded for large
files, stalled and slow bodies (the idle timeout, the shutdown cutoff)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import random
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.errors import ServiceUnavailable
from filejobs.shutdown import RETRY_AFTER, Shutdown
from filejobs.storage import Buffers, Digest, UploadSink
from filejobs.uploads import WRITE_CHUNK, Limits, receive_upload
from tests.conftest import files_under
from tests.uploads.helpers import (
    BOUNDARY,
    HANG,
    MULTIPART,
    STALL,
    App,
    MiB,
    agen,
    as_response,
    asgi_post,
    assert_nothing_left,
    assert_problem,
    chunked,
    file_head,
    file_part,
    multipart,
    part,
    stored_upload,
)

# ==== stored exactly ============================================================================


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


def test_a_read_ending_at_any_offset_of_a_delimiter_or_a_near_miss_stores_the_same_file() -> None:
    """Two reads, cut at every offset around the file's end (a near-miss of the delimiter in the
    data, the delimiter itself, the next part and the closing delimiter) and around the file's
    start: always the same size, SHA-256 and fields. The file crosses ``HASH_INLINE``, so both
    hashing paths are taken (in the sink's write for the full chunk, inline for the tail)."""
    near_miss = b"\r\n--" + BOUNDARY.encode()[:-1] + b"!"
    content = random.Random(3).randbytes(WRITE_CHUNK + 5000) + near_miss + b"\r\n-tail"
    body = multipart(file_part(content, "blob.bin", "application/octet-stream"), part("processor", "inspect"))
    file_start = body.index(b"\r\n\r\n") + 4
    assert body[file_start : file_start + len(content)] == content
    file_end = file_start + len(content)
    cuts = [*range(1, file_start + 8), *range(file_end - len(near_miss) - 16, len(body))]
    expected = hashlib.sha256(content).hexdigest()
    for cut in cuts:
        sink = CountingSink(target=len(content))
        received = asyncio.run(receive(agen([body[:cut], body[cut:]]), sink))
        assert (received.size, received.sha256, received.fields) == (
            len(content),
            expected,
            {"processor": "inspect"},
        ), cut
        assert sink.written == len(content), cut


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
        self.held = False

    async def write(self, data: Buffers, *, final: bool = False, digest: Digest | None = None) -> None:
        pieces = [data] if isinstance(data, bytes | memoryview) else data
        if digest is not None:
            for piece in pieces:
                digest.update(piece)
        size = sum(len(piece) for piece in pieces)
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


def no_cr(size: int) -> bytes:
    """Random bytes without CR: data ending in ``\r`` (1 in 256 of random chunks) could begin the
    delimiter, so the parser would hold that byte back until more arrives, and a stalled body's
    last byte would never reach the writer: the test would wait for it in vain."""
    return os.urandom(size).replace(b"\r", b"x")


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
                yield no_cr(64 * 1024)  # a new object each time, as a server's reads are
            yield no_cr(sent % (64 * 1024))
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
