"""Fixtures for the client tests: a real ``filejobs serve`` per test module, and helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from filejobs.testing import Server
from tests.sample_processors import ALL as TEST_PROCESSORS


def running_server(root: Path, **env: object) -> Iterator[Server]:
    """A started server on its own data directory under ``root`` (``env``: FILEJOBS_* settings);
    stopped, with its log's tail printed, when the generator is closed."""
    values = {
        "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS),
        "FILEJOBS_WORKERS": "2",
        "FILEJOBS_CANCEL_GRACE": "0.5",
        "FILEJOBS_RETRY_BACKOFF": "0",
    }
    values.update({f"FILEJOBS_{k.upper()}": str(v) for k, v in env.items()})
    server = Server(root / "data", env=values, log_path=root / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        print(f"----- server log (tail) -----\n{server.log_tail(60)}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the whole test module (starting one takes a second or two)."""
    yield from running_server(tmp_path_factory.mktemp("server"))


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello world\nsecond line\n")
    return path
