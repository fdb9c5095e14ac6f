"""``filejobs keys create|list|revoke``, run as the real CLI in a process of its own.

Each run gets an explicit environment: the data directory and nothing else ``FILEJOBS_*``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from filejobs.testing import base_env
from tests.conftest import REPO

KEY = re.compile(r"fj_[A-Za-z0-9_-]{43}")
CLI_TIMEOUT = 60


def keys_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "filejobs.cli", "keys", *args],
        cwd=REPO,
        env=base_env({"FILEJOBS_DATA_DIR": str(data_dir), "COLUMNS": "250", "NO_COLOR": "1"}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def create(data_dir: Path, name: str) -> str:
    result = keys_cli(data_dir, "create", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def json_list(data_dir: Path) -> list[dict[str, Any]]:
    result = keys_cli(data_dir, "list", "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def database_bytes(data_dir: Path) -> bytes:
    """The SQLite database and its journals, as stored."""
    files = sorted(data_dir.glob("filejobs.db*"))
    assert any(f.name == "filejobs.db" for f in files), files
    return b"".join(f.read_bytes() for f in files)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_create_prints_the_key_alone_and_stores_only_its_hash(data_dir: Path) -> None:
    result = keys_cli(data_dir, "create", "alice")

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # the key and nothing else: `KEY=$(filejobs keys create x)`
    secret = lines[0]
    assert KEY.fullmatch(secret), secret

    stored = database_bytes(data_dir)
    assert secret.encode() not in stored
    assert secret[3:].encode() not in stored  # not even without its prefix
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored


def test_a_duplicate_name_is_refused(data_dir: Path) -> None:
    secret = create(data_dir, "alice")

    result = keys_cli(data_dir, "create", "alice")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "alice" in result.stderr
    assert "exists" in result.stderr
    assert [key["name"] for key in json_list(data_dir)] == ["alice"]
    assert [key["prefix"] for key in json_list(data_dir)] == [secret[:10]]  # the first one is kept


def test_invalid_names_are_refused(data_dir: Path) -> None:
    for name in ("", "has space", "-dash-first", "x" * 101):
        result = keys_cli(data_dir, "create", "--", name)

        assert result.returncode == 2, (name, result.stdout)
        assert result.stdout == ""
        assert "key name" in result.stderr
    assert json_list(data_dir) == []


def test_list_shows_names_and_prefixes_never_a_key(data_dir: Path) -> None:
    secrets = {name: create(data_dir, name) for name in ("alice", "ci.bot@example", "b-2")}

    table = keys_cli(data_dir, "list")
    listed = json_list(data_dir)

    assert table.returncode == 0, table.stderr
    for name, secret in secrets.items():
        assert name in table.stdout
        assert secret[:10] in table.stdout
        assert secret not in table.stdout
        assert secret[10:] not in table.stdout  # no part past the prefix either
    assert len(set(secrets.values())) == 3
    assert [key["name"] for key in listed] == ["alice", "ci.bot@example", "b-2"]  # oldest first
    assert len({key["prefix"] for key in listed}) == 3  # the shown prefixes tell keys apart
    for key in listed:
        secret = secrets[key["name"]]
        assert key["prefix"] == secret[:10]
        assert key["revoked_at"] is None
        assert key["created_at"]
        assert secret not in json.dumps(key)
        assert set(key) == {"name", "prefix", "created_at", "revoked_at"}


def test_revoke_marks_the_key_revoked_and_keeps_the_others(data_dir: Path) -> None:
    create(data_dir, "alice")
    create(data_dir, "bob")

    result = keys_cli(data_dir, "revoke", "alice")

    assert result.returncode == 0, result.stderr
    assert "alice" in result.stdout
    listed = {key["name"]: key for key in json_list(data_dir)}
    assert listed["alice"]["revoked_at"] is not None
    assert listed["bob"]["revoked_at"] is None
    table = keys_cli(data_dir, "list").stdout
    alice_row = next(line for line in table.splitlines() if "alice" in line)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC.*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", alice_row)

    again = keys_cli(data_dir, "revoke", "alice")  # revoking twice is harmless
    assert again.returncode == 0, again.stderr
    assert json_list(data_dir)[0]["revoked_at"] == listed["alice"]["revoked_at"]


def test_revoke_of_an_unknown_name_fails(data_dir: Path) -> None:
    create(data_dir, "alice")

    result = keys_cli(data_dir, "revoke", "bob")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "bob" in result.stderr
    assert json_list(data_dir)[0]["revoked_at"] is None
