"""Fixtures of the job tests: a worker child driven directly; apps built with their own settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.executor import ChildProcess
from filejobs.jobs.worker import LocalWorker
from filejobs.services import Services
from tests.conftest import burst_worker, make_settings

App = tuple[TestClient, Services, LocalWorker]


@pytest.fixture
def child() -> Iterator[ChildProcess]:
    process = ChildProcess()
    yield process
    process.kill()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def app_builder() -> Iterator[Callable[..., App]]:
    """``app_builder(data_dir, **settings)`` → (client, services, burst worker): an app of its own
    settings, closed after the test."""
    clients: list[TestClient] = []

    def build(data_dir: Path, **overrides: Any) -> App:
        settings = make_settings(data_dir, **overrides)
        client = TestClient(
            create_app(settings, dispatcher=InMemoryDispatcher()), raise_server_exceptions=False
        )
        client.__enter__()
        clients.append(client)
        services: Services = client.app_state["services"]
        return client, services, burst_worker(services)

    yield build
    for client in reversed(clients):
        client.__exit__(None, None, None)
