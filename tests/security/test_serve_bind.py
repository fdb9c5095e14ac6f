"""``filejobs serve`` refuses a non-loopback address while no API key is required, unless told
(``--allow-no-auth`` / FILEJOBS_ALLOW_OPEN_BIND=1) that something in front authenticates.

The real CLI in a process of its own, with an explicit environment (the data directory, the
test processors, one worker; nothing else ``FILEJOBS_*``). A start is proven by ``/healthz``
answering within a deadline; every process is stopped, and killed with its group if need be.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from filejobs import keys
from filejobs.db import Database
from filejobs.migrate import upgrade
from filejobs.settings import Settings
from filejobs.testing import base_env, free_port
from tests.conftest import REPO
from tests.sample_processors import ALL as TEST_PROCESSORS

pytestmark = pytest.mark.e2e

START_TIMEOUT = 60.0
REFUSAL_TIMEOUT = 60.0


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


Spawn = Callable[..., Serve]


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    return base_env(
        {
            "FILEJOBS_DATA_DIR": str(data_dir),
            "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS),
            "FILEJOBS_WORKERS": "1",
            **extra,
        }
    )


def serve_command(host: str, port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "filejobs.cli", "serve", "--host", host, "--port", str(port), *args]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(host, *args, env=...)`` → a started :class:`Serve`, or a failed test. Every process
    is stopped at teardown (SIGTERM, then SIGKILL to its whole group)."""
    started: list[Serve] = []

    def start(host: str, *args: str, env: dict[str, str]) -> Serve:
        port = free_port()
        log = tmp_path / f"serve-{len(started) + 1}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                serve_command(host, port, *args),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        connect = "[::1]" if ":" in host else "127.0.0.1"
        serve = Serve(proc=proc, url=f"http://{connect}:{port}", log=log)
        started.append(serve)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = proc.poll()
            if code is not None:
                pytest.fail(f"serve --host {host} exited with {code}:\n{serve.log_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{serve.url}/healthz", timeout=1.0).status_code == 200:
                    return serve
            if time.monotonic() > deadline:
                pytest.fail(
                    f"serve --host {host}: no /healthz within {START_TIMEOUT:g} s:\n{serve.log_text()}"
                )
            time.sleep(0.05)

    try:
        yield start
    finally:
        for serve in started:
            if serve.proc.poll() is None:
                serve.proc.send_signal(signal.SIGTERM)
                try:
                    serve.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(serve.proc.pid, signal.SIGKILL)
                    serve.proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(serve.proc.pid, signal.SIGKILL)  # any worker child left behind


def refused(data_dir: Path, host: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_command(host, free_port()),
        cwd=REPO,
        env=env_for(data_dir, **extra),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT,
    )


def make_key(data_dir: Path, name: str = "ops") -> str:
    url = Settings(data_dir=data_dir).resolved_database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    db = Database(url)
    try:
        return keys.create_key(db, name)[1]
    finally:
        db.dispose()


def stop(serve: Serve) -> int:
    serve.proc.send_signal(signal.SIGTERM)
    return serve.proc.wait(timeout=30)


# ---- refused --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "files.example"])
def test_a_public_address_without_auth_is_refused(data_dir: Path, host: str) -> None:
    started = time.monotonic()
    result = refused(data_dir, host)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "--allow-no-auth" in result.stderr
    assert "FILEJOBS_REQUIRE_AUTH" in result.stderr
    assert "keys create" in result.stderr
    assert "Uvicorn running" not in result.stdout + result.stderr  # refused before listening
    assert time.monotonic() - started < REFUSAL_TIMEOUT


def test_allow_open_bind_off_is_still_refused(data_dir: Path) -> None:
    result = refused(data_dir, "0.0.0.0", FILEJOBS_ALLOW_OPEN_BIND="0", FILEJOBS_REQUIRE_AUTH="0")
    assert result.returncode == 2, result.stderr


# ---- started --------------------------------------------------------------------------------


def test_require_auth_lets_it_listen_everywhere(data_dir: Path, spawn: Spawn) -> None:
    serve = spawn("0.0.0.0", env=env_for(data_dir, FILEJOBS_REQUIRE_AUTH="1"))

    response = httpx.get(f"{serve.url}/v1/jobs", timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert stop(serve) == 0


def test_an_existing_key_lets_it_listen_everywhere(data_dir: Path, spawn: Spawn) -> None:
    secret = make_key(data_dir)

    serve = spawn("0.0.0.0", env=env_for(data_dir))

    assert httpx.get(f"{serve.url}/v1/jobs", timeout=10).status_code == 401
    authorized = httpx.get(f"{serve.url}/v1/jobs", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert authorized.status_code == 200
    assert stop(serve) == 0


def test_allow_no_auth_lets_it_listen_everywhere_open(data_dir: Path, spawn: Spawn) -> None:
    serve = spawn("0.0.0.0", "--allow-no-auth", env=env_for(data_dir))

    assert httpx.get(f"{serve.url}/v1/jobs", timeout=10).status_code == 200  # open, as told
    assert stop(serve) == 0


def test_the_allow_open_bind_setting_does_the_same(data_dir: Path, spawn: Spawn) -> None:
    serve = spawn("0.0.0.0", env=env_for(data_dir, FILEJOBS_ALLOW_OPEN_BIND="1"))

    assert httpx.get(f"{serve.url}/v1/jobs", timeout=10).status_code == 200
    assert stop(serve) == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_needs_no_key(data_dir: Path, spawn: Spawn, host: str) -> None:
    serve = spawn(host, env=env_for(data_dir))

    assert httpx.get(f"{serve.url}/v1/jobs", timeout=10).status_code == 200
    assert stop(serve) == 0
