"""POST /v1/jobs: storage failures (507 for a full disk, a 500 problem without paths for other
errors, a failed row insert) and client disconnects: nothing is left behind."""

from __future__ import annotations

import errno
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.errors import ClientGone
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.services import Services
from filejobs.testing import post_file
from filejobs.uploads import WRITE_CHUNK
from tests.uploads.helpers import (
    DISCONNECT,
    MULTIPART,
    SURELY_WRITTEN,
    as_response,
    asgi_post,
    assert_nothing_left,
    assert_problem,
    chunked,
    file_part,
    multipart,
    part,
    run_create_job,
    spy_on_uploads,
)

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
    response = post_file(client, content, name="big.bin", content_type="application/octet-stream")
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
    response = post_file(client, content)
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
    response = post_file(client, b"x" * 1000)
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
    response = post_file(client, b"content\n")
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
