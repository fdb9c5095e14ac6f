"""Fixtures: a real ``filejobs serve`` shared by a module's tests, and servers of a test's own
(for the kill tests, which count every job on their server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filejobs.testing import Server
from tests.cli.helpers import ServerFactory, server_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for every test of a module (tests there look only at their own jobs)."""
    root = tmp_path_factory.mktemp("server")
    shared = Server(root / "data", env=server_env(), log_path=root / "server.log")
    with shared:
        yield shared
    print(f"----- shared server log (tail) -----\n{shared.log_tail(80)}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """``start_server(data_dir=None, **FILEJOBS_ENV)`` → a started server of this test's own."""
    servers: list[Server] = []

    def start(data_dir: Path | None = None, **env: Any) -> Server:
        started = Server(
            data_dir or tmp_path / "data",
            env=server_env(**env),
            log_path=tmp_path / f"server-{len(servers)}.log",
        )
        servers.append(started)
        return started.start()

    try:
        yield start
    finally:
        for started in servers:
            started.stop()
        for index, started in enumerate(servers):
            print(f"----- server {index} log (tail) -----\n{started.log_tail(80)}")
