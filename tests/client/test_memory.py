"""Uploading a large file takes constant memory: the client streams it from disk."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from filejobs.testing import Server, base_env
from tests.client.conftest import running_server
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

SIZE = 512 * 1024 * 1024
#: Allowed growth of the client's peak RSS while hashing and uploading SIZE bytes.
MAX_GROWTH = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No workers: the upload is all that is measured, nothing runs it afterwards."""
    yield from running_server(tmp_path_factory.mktemp("server"), workers=0)


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "large.bin"
    with open(path, "wb") as f:
        f.truncate(SIZE)  # sparse: costs no disk, reads as zeros
    return path


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_uploading_512_mib_keeps_memory_flat(server: Server, large_file: Path, mode: str) -> None:
    probe = subprocess.run(
        [sys.executable, "-m", "tests.client.upload_probe", server.base_url, str(large_file), mode],
        cwd=REPO,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    print(f"{mode}: {report}")
    assert report["size"] == SIZE
    assert report["progress"] == SIZE
    assert report["rss_growth"] < MAX_GROWTH, report
    assert report["traced_peak"] < MAX_GROWTH, report
