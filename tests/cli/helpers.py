"""Helpers for the CLI tests: run ``filejobs`` in-process (typer's CliRunner) or as a process of
its own, build file trees, read ledgers, list a server's jobs, and wait on real conditions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from filejobs.cli import app
from filejobs.testing import Server, base_env
from tests.sample_processors import ALL as TEST_PROCESSORS

ServerFactory = Callable[..., Server]


def server_env(**env: Any) -> dict[str, str]:
    values = {"FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS), "FILEJOBS_WORKERS": "2"}
    values.update({f"FILEJOBS_{k.upper()}": str(v) for k, v in env.items()})
    return values


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    """``filejobs ARGS`` in-process; stdout and stderr apart, wide tables, no colour."""
    return CliRunner().invoke(
        app,
        [str(a) for a in args],
        env={"COLUMNS": "250", "NO_COLOR": "1", **(env or {})},
        catch_exceptions=False,
    )


def cli_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "filejobs.cli", *(str(a) for a in args)]


def cli_process(cwd: Path) -> dict[str, Any]:
    """How ``filejobs`` runs as a process of its own: in ``cwd``, wide tables, no colour, no stdin,
    and SIGINT at its default even when the test runner was started with it ignored."""
    return {
        "cwd": cwd,
        "env": base_env({"COLUMNS": "250", "NO_COLOR": "1"}),
        "stdin": subprocess.DEVNULL,
        "preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    }


def spawn_cli(*args: str | Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """``filejobs ARGS`` as a process of its own, its stdout in ``log.out`` and stderr in ``log.err``."""
    with open(log.with_suffix(".out"), "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        return subprocess.Popen(cli_command(*args), stdout=out, stderr=err, **cli_process(cwd))


def make_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def ledger_records(path: Path) -> list[dict[str, Any]]:
    """The ledger's whole lines (a torn last line is left out, as the CLI does)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def poll(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds, checking every 10 ms; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def all_jobs(server: Server, **filters: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        while True:
            params: dict[str, Any] = {"limit": 500, **filters}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/jobs", params=params).json()
            jobs += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return jobs


def uploads_settled(server: Server) -> bool:
    """No upload is being received (no ``tmp/*.part``) and every stored upload has its job row:
    an upload a killed client sent in full has become a job by now, or never will."""
    data = server.data_dir
    if any(entry.name.endswith(".part") for entry in (data / "tmp").iterdir()):
        return False
    stored = {entry.name for entry in (data / "uploads").iterdir()}
    return stored <= {job["id"] for job in all_jobs(server)}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
