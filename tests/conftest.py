"""Fixtures: every test gets its own data directory, SQLite database and app.

Apps built here use an :class:`InMemoryDispatcher`: jobs run only when a test calls
``worker.drain()`` (burst mode), so nothing happens behind a test's back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.worker import LocalWorker
from filejobs.services import Services
from filejobs.settings import Settings
from filejobs.testing.s3 import CREDENTIALS as S3_CREDENTIALS
from filejobs.testing.s3 import S3Bucket, S3Server
from filejobs.testing.s3 import s3_bucket as fresh_s3_bucket
from filejobs.testing.s3 import s3_server as start_s3_server
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.services import unavailable_skips

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test, never from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("FILEJOBS_") and name != "FILEJOBS_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "workers": 1,
        "job_timeout": 20.0,
        "lease_seconds": 5.0,
        "retry_backoff": 0.0,
        "retry_backoff_max": 0.0,
        "cancel_grace": 0.5,
        "shutdown_grace": 2.0,
        "sweep_interval": 3600.0,
        "progress_interval": 0.0,
        "retention": timedelta(days=7),
        "processors": TEST_PROCESSORS,
        # Every submit runs: the suite's tests often submit the same file again and expect a run.
        # Result reuse is tested where it is turned on (tests/jobs/test_dedup.py and its kin).
        "reuse": False,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir)


@pytest.fixture
def dispatcher() -> InMemoryDispatcher:
    return InMemoryDispatcher()


@pytest.fixture
def client(settings: Settings, dispatcher: InMemoryDispatcher) -> Iterator[TestClient]:
    app = create_app(settings, dispatcher=dispatcher)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def services(client: TestClient) -> Services:
    services: Services = client.app_state["services"]
    return services


def burst_worker(services: Services) -> LocalWorker:
    """A worker for burst mode on ``services``: ``drain()`` runs every due job, then returns."""
    return LocalWorker(
        db=services.db,
        storage=services.storage,
        registry=services.registry,
        settings=services.settings,
        on_change=services.hub.notify,
        threads=0,
    )


@pytest.fixture
def worker(services: Services) -> LocalWorker:
    return burst_worker(services)


def files_under(root: Path) -> list[Path]:
    """Every regular file below ``root`` except the SQLite database and its journals."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("filejobs.db"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1, for the whole session (skips where moto is missing)."""
    with unavailable_skips(), start_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh bucket on the test S3 server; its credentials in this process's environment."""
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with fresh_s3_bucket(s3_server) as bucket:
        yield bucket
