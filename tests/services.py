"""Reaching the machine's real services from a test: :mod:`filejobs.testing` raises
:class:`~filejobs.testing.Unavailable` where one is missing; here that becomes a skip with the
reason, or a failure under ``FILEJOBS_REQUIRE_SERVICES=1`` (which CI sets)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from filejobs import testing
from filejobs.db import Database
from filejobs.migrate import upgrade
from filejobs.settings import Settings
from filejobs.testing import POSTGRES_ADMIN_URL as POSTGRES_ADMIN_URL
from filejobs.testing import Unavailable


def skip_unavailable(reason: str) -> None:
    """Skip the test for ``reason``; fail it instead under ``FILEJOBS_REQUIRE_SERVICES=1``."""
    if os.environ.get("FILEJOBS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}; FILEJOBS_REQUIRE_SERVICES=1 makes that a failure")
    pytest.skip(reason)


@contextlib.contextmanager
def unavailable_skips() -> Iterator[None]:
    """Turn :class:`~filejobs.testing.Unavailable` raised inside into :func:`skip_unavailable`."""
    try:
        yield
    except Unavailable as exc:
        skip_unavailable(str(exc))


def require_port(name: str, host: str, port: int) -> None:
    with unavailable_skips():
        testing.require_port(name, host, port)


def require_binary(name: str) -> str:
    """The path of an installed program; skip (or fail) without it."""
    with unavailable_skips():
        return testing.require_binary(name)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards. Yields its URL."""
    require_port("PostgreSQL", "127.0.0.1", 5432)
    with testing.fresh_postgres_database() as url:
        yield url


@contextlib.contextmanager
def migrated_database(kind: str, tmp_path: Path) -> Iterator[Database]:
    """A fresh database at the schema's head: ``"sqlite"`` (in ``tmp_path``) or ``"postgresql"``."""
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            url = Settings(data_dir=tmp_path).resolved_database_url
        else:
            url = Settings(database_url=stack.enter_context(fresh_postgres_database())).resolved_database_url
        upgrade(url)
        database = Database(url)
        stack.callback(database.dispose)
        yield database
