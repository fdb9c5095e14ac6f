"""The app's shutdown never hangs on one stuck background component (``filejobs.app.STOP_WITHIN``):
it is logged and left behind, and everything after it (the database, the worker) still closes."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs import app as app_module
from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.services import Services
from tests.conftest import make_settings


@pytest.mark.parametrize("component", ["webhooks", "key_watch", "feed"])
def test_a_component_whose_stop_hangs_does_not_hang_shutdown(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, component: str
) -> None:
    monkeypatch.setattr(app_module, "STOP_WITHIN", 0.2)
    closed: list[str] = []
    app = create_app(make_settings(data_dir), dispatcher=InMemoryDispatcher())
    client = TestClient(app)
    with client:
        services: Services = client.app_state["services"]
        assert client.get("/healthz").status_code == 200

        async def stuck() -> None:
            await asyncio.Event().wait()  # never set: a close that never returns

        monkeypatch.setattr(getattr(services, component), "stop", stuck)
        close = services.close

        def recording_close() -> None:
            closed.append("services")
            close()

        monkeypatch.setattr(services, "close", recording_close)
        caplog.set_level(logging.WARNING, logger="filejobs.app")
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert closed == ["services"]  # what comes after the stuck component still ran
    assert any("did not stop within 0.2 s" in record.getMessage() for record in caplog.records)
