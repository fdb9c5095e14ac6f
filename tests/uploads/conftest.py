"""The upload tests' fixtures: apps with settings of their own."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from tests.conftest import make_settings
from tests.uploads.helpers import App


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
