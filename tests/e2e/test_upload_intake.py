"""End-to-end: uploads in flight when the server stops, by SIGTERM or by ``kill -9`` (issue 14,
items 8 and 9), on a real ``filejobs serve`` and real sockets."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filejobs.testing import Server, ServerFactory, server_factory
from filejobs.testing.stalled import read_answer_head, start_stalled_upload

pytestmark = pytest.mark.e2e

#: More than the receiver's write chunk: the temp file exists before and after issue 14's fixes.
STALLED_BYTES = 2 * 1024 * 1024 + 1000
#: A bound on waits for what must happen (a hang turns into a failure).
HANG = 20.0


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_server(tmp_path: Path, data_dir: Path) -> Iterator[ServerFactory]:
    with server_factory(tmp_path, data_dir, {"FILEJOBS_WORKERS": "0"}) as start:
        yield start


def temp_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "tmp").glob("*.part"))


def wait_for_temp_file(data_dir: Path) -> Path:
    """The upload's temp file, once it holds what was sent (the server wrote it)."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        for path in temp_files(data_dir):
            if path.stat().st_size >= STALLED_BYTES:
                return path
        time.sleep(0.02)
    pytest.fail(f"no temp file holds the stalled upload's bytes: {temp_files(data_dir)}")


@contextlib.contextmanager
def stalled_upload(server: Server, data_dir: Path) -> Iterator[tuple[socket.socket, Path]]:
    """An upload stalled after :data:`STALLED_BYTES`, once they are in its temp file; closed after."""
    sock = start_stalled_upload(server.port, STALLED_BYTES, timeout=HANG)
    try:
        yield sock, wait_for_temp_file(data_dir)
    finally:
        sock.close()


def test_sigterm_answers_an_unfinished_upload_503_and_logs_no_error(
    start_server: ServerFactory, data_dir: Path
) -> None:
    server = start_server()
    with stalled_upload(server, data_dir) as (sock, _):
        server.terminate()
        answer = read_answer_head(sock)
    assert server.wait(HANG) == 0
    assert answer is not None, "the server closed the connection without answering"
    status, headers = answer
    assert status == 503
    assert headers["retry-after"].isdigit()
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    log = server.log_text()
    assert "ERROR" not in log
    assert "Traceback" not in log
    assert "upload ended by the shutdown" in log  # a WARNING
    assert temp_files(data_dir) == []


def test_kill9_mid_upload_leaves_no_temp_file_after_a_restart(
    start_server: ServerFactory, data_dir: Path
) -> None:
    server = start_server()
    with stalled_upload(server, data_dir) as (_, left):
        server.kill9()
    assert left.exists()  # nobody removed it: the process died
    server.restart()  # answers /healthz: its startup is over
    assert temp_files(data_dir) == []
    assert "removed 1 upload temp file(s) left by stopped processes" in server.log_text()
