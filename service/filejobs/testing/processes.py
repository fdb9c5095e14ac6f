"""A managed process: one program in a session of its own, its output in a log file, started
within a deadline and always cleaned up.

:class:`ManagedProcess` is the base of :class:`~filejobs.testing.Server` and
:class:`~filejobs.testing.Worker`: it spawns ``argv()`` with an explicit environment (nothing
``FILEJOBS_*`` leaks in from the caller's shell, see :func:`~filejobs.testing.base_env`), polls
``is_ready()`` until a deadline, and on :meth:`~ManagedProcess.stop` kills the process, its process
group and every descendant it was ever seen with (a worker child outlives a ``kill -9``'d parent
until it notices). A failed start raises :class:`ProcessError` with the log's tail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psutil

from filejobs.testing.environment import base_env

START_TIMEOUT = 30.0


class ProcessError(RuntimeError):
    """A managed process did not start (it exited, or was not ready in time)."""


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


class ManagedProcess:
    """A program started in its own session with its output appended to ``log_path``; use as a
    context manager (or call :meth:`stop`). Subclasses say what to run (:meth:`argv`) and when it
    is ready (:meth:`is_ready`)."""

    #: Raised when a start fails; subclasses name their own.
    error: type[ProcessError] = ProcessError

    def __init__(
        self,
        *,
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        name: str = "process",
    ) -> None:
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self.extra_env = dict(env or {})
        self.start_timeout = start_timeout
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0  # where the latest start's output begins in the log file
        self._seen: dict[int, psutil.Process] = {}

    # ---- what to run ----------------------------------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return base_env(self.extra_env)

    def is_ready(self) -> bool:
        """Polled while starting, until it holds or the deadline passes."""
        raise NotImplementedError

    def not_ready_reason(self) -> str:
        """Why the latest :meth:`is_ready` was false, for the error message."""
        return "not ready"

    # ---- properties -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Spawn the process and wait until it is ready (killing everything if it is not)."""
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self._kill_all()
            raise
        return self

    def spawn(self) -> Self:
        """Start the process without waiting (call :meth:`wait_ready`): lets a caller start several
        processes side by side."""
        assert self.returncode is not None or self.proc is None, f"{self.name} is already running"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = self.argv()
        self._log.write(f"\n===== {' '.join(argv[1:])} =====\n".encode())
        self._log.flush()
        self._log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: cleanup can reach every descendant
        )
        self._seen[self.proc.pid] = psutil.Process(self.proc.pid)
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll :meth:`is_ready`; raise :attr:`error` with the log's tail if the process exits or
        the deadline passes first."""
        assert self.proc is not None
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            code = self.proc.poll()
            if code is not None:
                raise self.error(f"{self.name} exited with code {code} while starting:\n{self.log_tail()}")
            if self.is_ready():
                self.remember_children()
                return
            if time.monotonic() >= deadline:
                raise self.error(
                    f"{self.name} was not ready within {limit:g} s ({self.not_ready_reason()}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def descendants(self) -> list[psutil.Process]:
        """The live descendants, remembered for cleanup."""
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        for proc in found:
            self._seen.setdefault(proc.pid, proc)
        return [p for p in found if not gone(p)]

    def remember_children(self) -> None:
        self.descendants()

    def kill9(self) -> None:
        """SIGKILL the main process only (its descendants must notice by themselves)."""
        self.remember_children()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10.0)

    def terminate(self) -> None:
        """SIGTERM the main process (a graceful shutdown); does not wait."""
        self.remember_children()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the main process to exit; its return code (negative: killed by a signal)."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Kill everything this process started, whatever state it is in, and close the log."""
        self._kill_all()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill_all(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.remember_children()  # orphans stay in the group: killed with it
        kill_everything(self.proc, self._seen.values())

    def __enter__(self) -> Self:
        """Start, unless already started (``with Server(...).start() as server:`` works too)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- diagnostics ----------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything in the log file (all starts of this process)."""
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def current_log(self) -> str:
        """The output of the latest start only."""
        if self._log is not None:
            self._log.flush()
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
