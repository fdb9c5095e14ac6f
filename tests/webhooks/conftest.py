"""Webhook tests: an app whose sender may call 127.0.0.1 over http, with timers shortened."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.settings import Settings
from filejobs.testing.webhooks import Receiver
from tests.conftest import make_settings

FAST: dict[str, Any] = {
    "webhook_allow_http": True,
    "webhook_allow_private": True,
    "webhook_timeout": 1.0,
    "webhook_retry_schedule": [0.1, 0.1, 0.1, 0.1, 0.1],
    "webhook_poll_interval": 0.1,
}


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir, **FAST)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def add_webhook(client: TestClient, url: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.02)
