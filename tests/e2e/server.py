"""A real ``filejobs serve`` process for end-to-end tests and benchmarks.

:class:`Server` starts the CLI on a free port with its own data directory and an explicit
environment (nothing ``FILEJOBS_*`` leaks in from the caller's shell), waits for ``/healthz``
within a deadline, and always cleans up: the server, its process group and every descendant it
was ever seen with (worker children outlive a ``kill -9``'d parent until they notice).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
#: How often a start is retried when another process took the free port first.
PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without FILEJOBS_*, plus the source root (``filejobs``) and the
    repo (``tests.sample_processors``) on PYTHONPATH, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILEJOBS_")}
    paths = (str(REPO / "service"), str(REPO), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def gone(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` s for every process in ``procs`` to exit; return those still alive."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        alive = [p for p in alive if not gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def kill_everything(leader: subprocess.Popen[bytes] | None, seen: Iterable[psutil.Process]) -> None:
    """SIGKILL ``leader``'s process group (it was started in a session of its own: the group
    outlives its leader, orphans included) and every process in ``seen``; wait for all of them."""
    seen = list(seen)
    if leader is not None:  # even when the leader is gone: its group may not be
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader.pid, signal.SIGKILL)
    for proc in seen:
        if not gone(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=10)
    wait_gone(seen, 10.0)


class ServerError(RuntimeError):
    pass


class Server:
    """``filejobs serve`` on 127.0.0.1:<free port>; use as a context manager (or call ``stop()``)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        start_timeout: float = START_TIMEOUT,
        args: Iterable[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args)  # extra `filejobs serve` options, e.g. --log-level warning
        self.extra_env = dict(env or {})
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / "server.log"
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._seen: dict[int, psutil.Process] = {}

    # ---- properties -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server was not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def env(self) -> dict[str, str]:
        return base_env({"FILEJOBS_DATA_DIR": str(self.data_dir), **self.extra_env})

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.base_url, **kwargs)  # type: ignore[arg-type]

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            self._spawn()
            try:
                self._wait_healthy()
                self.remember_children()
                return self
            except ServerError:
                self._kill_all()
                if attempt + 1 < PORT_ATTEMPTS and "address already in use" in self.log_tail().lower():
                    continue
                raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n===== filejobs serve --port {self.port} =====\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "filejobs.cli", "serve"),
                *("--host", "127.0.0.1", "--port", str(self.port), *self.args),
            ],
            cwd=self.data_dir.parent,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: cleanup can reach every descendant
        )
        self._seen[self.proc.pid] = psutil.Process(self.proc.pid)

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ServerError(f"the server exited with code {code} while starting:\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.base_url}/healthz", timeout=1.0)
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            time.sleep(0.05)
        raise ServerError(
            f"/healthz did not answer within {self.start_timeout:g} s ({last_error}):\n{self.log_tail()}"
        )

    def children(self) -> list[psutil.Process]:
        """The server's live descendants (its worker children), remembered for cleanup."""
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self._seen.setdefault(child.pid, child)
        return found

    def remember_children(self) -> None:
        self.children()

    def kill9(self) -> None:
        """SIGKILL the server process only (its children must notice by themselves)."""
        self.remember_children()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10.0)

    def terminate(self) -> None:
        """SIGTERM the server process (graceful shutdown); does not wait."""
        self.remember_children()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the server process to exit; its return code (negative: killed by signal)."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def restart(self, timeout: float = 30.0) -> Server:
        """Stop gracefully (SIGTERM), then start again on the same port and data directory, as a
        deploy would."""
        self.terminate()
        self.wait(timeout)
        self._kill_all()  # whatever worker child is left
        self._spawn()
        self._wait_healthy()
        self.remember_children()
        return self

    def stop(self) -> None:
        """Kill everything this server started, whatever state it is in, and close the log."""
        self._kill_all()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill_all(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.remember_children()
        kill_everything(self.proc, self._seen.values())

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- diagnostics ----------------------------------------------------------------------

    def log_text(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# ---- waiting on a job -------------------------------------------------------------------


def wait_for(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
) -> dict[str, Any]:
    """Long-poll the job until ``until(job)`` holds; fail after ``timeout`` s with the last state."""
    deadline = time.monotonic() + timeout
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    etag = response.headers["ETag"]
    while not until(job):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"job {job_id} did not get there within {timeout:g} s; last seen: {job}")
        response = client.get(
            f"/v1/jobs/{job_id}",
            params={"wait": min(10.0, max(0.1, remaining))},
            headers={"If-None-Match": etag},
        )
        if response.status_code == 304:
            continue
        assert response.status_code == 200, response.text
        job, etag = response.json(), response.headers["ETag"]
    return job


def status_is(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda job: job["status"] in statuses


ServerFactory = Callable[..., Server]


@contextlib.contextmanager
def server_factory(log_dir: Path, data_dir: Path, defaults: Mapping[str, str]) -> Iterator[ServerFactory]:
    """``start(directory=None, **env)`` → a started :class:`Server` on ``data_dir`` (or
    ``directory``) with ``defaults`` plus ``env`` (``workers=2`` → ``FILEJOBS_WORKERS=2``). Every
    server started is killed on exit, and its log's tail printed (pytest shows it for a failure)."""
    servers: list[Server] = []

    def start(directory: Path | None = None, **env: Any) -> Server:
        values = {**defaults, **{f"FILEJOBS_{k.upper()}": str(v) for k, v in env.items()}}
        server = Server(
            directory or data_dir, env=values, log_path=log_dir / f"server-{len(servers) + 1}.log"
        )
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
        for index, server in enumerate(servers, 1):
            print(f"----- server {index} log (tail) -----\n{server.log_tail(80)}")


def keys_cli(data_dir: Path, *args: str) -> str:
    """``filejobs keys ARGS`` against ``data_dir``'s database; its output (it must succeed)."""
    result = subprocess.run(
        [sys.executable, "-m", "filejobs.cli", "keys", *args],
        cwd=REPO,
        env=base_env({"FILEJOBS_DATA_DIR": str(data_dir)}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
