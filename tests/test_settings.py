from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from filejobs.settings import Settings


def test_defaults_are_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.backend == "local"
    assert settings.data_dir == Path("./data")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'data' / 'filejobs.db'}"
    assert settings.workers >= 1
    assert settings.max_attempts == 3
    assert settings.retention == timedelta(days=7)


def test_environment_is_read_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FILEJOBS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FILEJOBS_MAX_UPLOAD_BYTES", "1024")
    monkeypatch.setenv("FILEJOBS_WORKERS", "0")
    monkeypatch.setenv("FILEJOBS_PROCESSORS", "a.b:C, d.e:F ,")
    monkeypatch.setenv("FILEJOBS_RETENTION", "3600")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.max_upload_bytes == 1024
    assert settings.workers == 0
    assert settings.processors == ["a.b:C", "d.e:F"]
    assert settings.retention == timedelta(hours=1)


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_picks_the_driver(given: str, resolved: str) -> None:
    assert Settings(database_url=given).resolved_database_url == resolved


@pytest.mark.parametrize(
    "bad", [{"backend": "kafka"}, {"max_upload_bytes": 0}, {"max_attempts": 0}, {"job_timeout": -1}]
)
def test_invalid_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("P2D", timedelta(days=2)),
    ],
)
def test_retention_durations(monkeypatch: pytest.MonkeyPatch, given: str, expected: timedelta) -> None:
    monkeypatch.setenv("FILEJOBS_RETENTION", given)
    assert Settings().retention == expected
