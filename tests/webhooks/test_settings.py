"""The webhook settings as the environment gives them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from filejobs.settings import Settings


def test_the_retry_schedule_takes_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEJOBS_WEBHOOK_RETRY_SCHEDULE", "5s, 1m,10m,1h,6h,0.5")
    monkeypatch.setenv("FILEJOBS_WEBHOOK_ALLOW_PRIVATE", "true")
    settings = Settings()
    assert settings.webhook_retry_schedule == [5.0, 60.0, 600.0, 3600.0, 21600.0, 0.5]
    assert settings.webhook_allow_private is True
    assert settings.webhook_allow_http is False


def test_the_defaults() -> None:
    settings = Settings()
    assert settings.webhook_retry_schedule == [5.0, 60.0, 600.0, 3600.0, 21600.0, 43200.0]
    assert settings.webhook_timeout == 10.0
    assert settings.webhook_disable_after == 86400.0


@pytest.mark.parametrize("value", ["", "soon", "5s,,1m", "-1"])
def test_a_bad_schedule_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FILEJOBS_WEBHOOK_RETRY_SCHEDULE", value)
    with pytest.raises(ValidationError):
        Settings()


def test_a_negative_wait_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(webhook_retry_schedule=[5.0, -1.0])
