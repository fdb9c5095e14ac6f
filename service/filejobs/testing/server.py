"""A real ``filejobs serve`` process (uvicorn, real HTTP, real signals) for tests and benchmarks.

:class:`HttpProcess` is a :class:`~filejobs.testing.ManagedProcess` that listens on a free port and
is ready when its health path answers; :class:`Server` runs the CLI with its own data directory.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
import psutil

from filejobs.testing.environment import base_env
from filejobs.testing.ports import free_port
from filejobs.testing.processes import START_TIMEOUT, ManagedProcess, ProcessError

#: How often a start is retried when another process took the free port first.
PORT_ATTEMPTS = 3


class ServerError(ProcessError):
    pass


class HttpProcess(ManagedProcess):
    """An HTTP server on 127.0.0.1:<free port>, ready once ``GET health_path`` answers
    :meth:`healthy`; a start that loses its port to another process is retried on a new one."""

    error = ServerError
    health_path = "/healthz"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.port = 0
        self._last_error = "no answer"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.base_url, **kwargs)

    def healthy(self, status: int) -> bool:
        return status == 200

    def is_ready(self) -> bool:
        try:
            response = httpx.get(f"{self.base_url}{self.health_path}", timeout=1.0)
        except httpx.HTTPError as exc:
            self._last_error = repr(exc)
            return False
        self._last_error = f"HTTP {response.status_code}"
        return self.healthy(response.status_code)

    def not_ready_reason(self) -> str:
        return f"{self.health_path}: {self._last_error}"

    def start(self) -> Self:
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            try:
                return super().start()
            except ServerError:
                if attempt + 1 < PORT_ATTEMPTS and "address already in use" in self.log_tail().lower():
                    continue
                raise
        raise AssertionError("unreachable")

    def restart(self, timeout: float = 30.0) -> Self:
        """Stop gracefully (SIGTERM), then start again on the same port, as a deploy would."""
        self.terminate()
        self.wait(timeout)
        self._kill_all()  # whatever child is left
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self._kill_all()
            raise
        return self


class Server(HttpProcess):
    """``filejobs serve`` on 127.0.0.1:<free port> with ``data_dir`` and ``env`` (``FILEJOBS_*``);
    use as a context manager (or call ``stop()``)."""

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
        super().__init__(
            cwd=self.data_dir.parent,
            log_path=Path(log_path) if log_path else self.data_dir.parent / "server.log",
            env=env,
            start_timeout=start_timeout,
            name="the server",
        )
        self.args = list(args)  # extra `filejobs serve` options, e.g. --log-level warning

    def argv(self) -> list[str]:
        return [
            *(sys.executable, "-m", "filejobs.cli", "serve"),
            *("--host", "127.0.0.1", "--port", str(self.port), *self.args),
        ]

    def env(self) -> dict[str, str]:
        # Every job runs (no reuse of a kept result) unless ``env`` says FILEJOBS_REUSE=true: the
        # harness's scenarios count runs and timings of jobs that often repeat the same file.
        return base_env(
            {"FILEJOBS_DATA_DIR": str(self.data_dir), "FILEJOBS_REUSE": "false", **self.extra_env}
        )

    def spawn(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().spawn()

    def children(self) -> list[psutil.Process]:
        """The server's descendants (its worker children, zombies included), remembered for cleanup."""
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in found:
            self._seen.setdefault(child.pid, child)
        return found


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
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "filejobs.cli", "keys", *args],
        cwd=data_dir.parent,
        env=base_env({"FILEJOBS_DATA_DIR": str(data_dir)}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise ProcessError(
            f"filejobs keys {' '.join(args)} exited with {result.returncode}:\n{result.stderr}"
        )
    return result.stdout.strip()
