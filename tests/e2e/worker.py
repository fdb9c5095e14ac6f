"""A real ``filejobs worker`` (a Celery worker) process for scale-out tests.

:class:`Worker` starts ``python -m filejobs.cli worker`` in its own process group with an explicit
environment (nothing ``FILEJOBS_*`` leaks in from the caller's shell), waits within a deadline
for Celery's ``… ready.`` line in its log, and always cleans up: the worker, its process group
and every descendant it was ever seen with (pool processes and their processor children).

The process tree of a prefork worker::

    python -m filejobs.cli worker            the main process (consumer, pool supervisor)
    ├── python -m filejobs.cli worker        a pool process (runs one job at a time)
    │   └── python -m filejobs.jobs.child    its processor child, started on the first job
    └── …

With ``--pool threads`` (or ``solo``) there are no pool processes: the processor children hang
off the main process directly.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

from tests.e2e.server import base_env, gone, kill_everything, wait_gone

START_TIMEOUT = 30.0
#: Celery's "<hostname> ready." line (``celery.apps.worker``), once the consumer is consuming.
READY = re.compile(r"\bfilejobs-(\d+)@\S+ ready\.")
CHILD_MODULE = "filejobs.jobs.child"


class WorkerError(RuntimeError):
    pass


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


class Worker:
    """``filejobs worker --concurrency N [--pool P]``; use as a context manager (or call ``stop()``)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        concurrency: int = 1,
        pool: str | None = None,
        log_path: Path | None = None,
        start_timeout: float = START_TIMEOUT,
        name: str = "worker",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.extra_env = dict(env or {})
        self.concurrency = concurrency
        self.pool = pool
        self.name = name
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"{name}.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0  # where this start's output begins in the log file
        self._seen: dict[int, psutil.Process] = {}

    # ---- properties -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the worker was not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def env(self) -> dict[str, str]:
        return base_env({"FILEJOBS_DATA_DIR": str(self.data_dir), **self.extra_env})

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "filejobs.cli", "worker", "--concurrency", str(self.concurrency)]
        if self.pool is not None:
            argv += ["--pool", self.pool]
        return argv

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Worker:
        """Spawn the worker and wait until Celery says it is ready."""
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self._kill_all()
            raise
        return self

    def spawn(self) -> Worker:
        """Start the process without waiting (call :meth:`wait_ready`): lets a test start several
        workers and servers side by side."""
        assert self.returncode is not None or self.proc is None, "the worker is already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n===== {' '.join(self.argv()[1:])} =====\n".encode())
        self._log.flush()
        self._log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            self.argv(),
            cwd=self.data_dir.parent,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: cleanup can reach every descendant
        )
        self._seen[self.proc.pid] = psutil.Process(self.proc.pid)
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll the log for this process's "ready." line; fail if it exits or the deadline passes."""
        assert self.proc is not None
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            match = READY.search(self.current_log())
            if match and int(match.group(1)) == self.pid:
                self.remember_children()
                return
            code = self.proc.poll()
            if code is not None:
                raise WorkerError(f"{self.name} exited with code {code} while starting:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise WorkerError(f"{self.name} was not ready within {limit:g} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def descendants(self) -> list[psutil.Process]:
        """The live descendants (pool processes, processor children), remembered for cleanup."""
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        for proc in found:
            self._seen.setdefault(proc.pid, proc)
        return [p for p in found if not gone(p)]

    def remember_children(self) -> None:
        self.descendants()

    def pool_pids(self) -> list[int]:
        """The pids of the prefork pool processes (the main process's children that are not
        processor children); empty for the threads and solo pools."""
        try:
            children = psutil.Process(self.pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return []
        self.remember_children()
        return sorted(p.pid for p in children if not gone(p) and CHILD_MODULE not in _cmdline(p))

    def processor_children(self) -> list[psutil.Process]:
        """Live ``python -m filejobs.jobs.child`` processes under this worker."""
        return [p for p in self.descendants() if CHILD_MODULE in _cmdline(p)]

    def job_pids(self) -> set[int]:
        """Pids that can appear in a lease owner of this worker (pool processes, or the main
        process for the threads/solo pools)."""
        return {self.pid, *self.pool_pids()}

    def kill9(self) -> None:
        """SIGKILL the main process only (pool processes and children must notice by themselves)."""
        self.remember_children()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(10.0)

    def kill9_tree(self) -> list[psutil.Process]:
        """SIGKILL the main process, its pool processes and their processor children at once, as
        when the machine dies; returns the processes killed (all gone when this returns)."""
        victims = self.descendants()
        with contextlib.suppress(psutil.NoSuchProcess):
            victims.insert(0, psutil.Process(self.pid))
        # One signal to the whole process group first, so the supervisor cannot replace a pool
        # process it sees die; then anything that left the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.wait(10.0)
        alive = wait_gone(victims, 10.0)
        if alive:
            raise WorkerError(f"{self.name}: processes survived SIGKILL: {[p.pid for p in alive]}")
        return victims

    def kill9_process(self, pid: int) -> None:
        """SIGKILL one process of this worker's tree (a pool process, say) and wait until it is gone."""
        proc = self._seen.get(pid) or psutil.Process(pid)
        self.remember_children()
        proc.kill()
        if wait_gone([proc], 10.0):
            raise WorkerError(f"{self.name}: process {pid} survived SIGKILL")

    def terminate(self) -> None:
        """SIGTERM the main process (Celery's warm shutdown); does not wait."""
        self.remember_children()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Wait for the main process to exit; its return code (negative: killed by a signal)."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Kill everything this worker started, whatever state it is in, and close the log."""
        self._kill_all()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kill_all(self) -> None:
        if self.proc is not None:
            self.remember_children()  # orphaned pool processes stay in the group: killed with it
        kill_everything(self.proc, self._seen.values())

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- diagnostics ----------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything in the log file (all starts of this worker)."""
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
