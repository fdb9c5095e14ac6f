"""Fixtures of the job tests that drive a worker child directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from filejobs.jobs.executor import ChildProcess


@pytest.fixture
def child() -> Iterator[ChildProcess]:
    process = ChildProcess()
    yield process
    process.kill()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path
