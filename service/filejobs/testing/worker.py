"""A real ``filejobs worker`` (a Celery worker) process for scale-out tests and benchmarks.

:class:`Worker` starts ``python -m filejobs.cli worker`` as a :class:`~filejobs.testing.ManagedProcess`
and is ready once Celery's ``… ready.`` line for this process is in its log.

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
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import psutil

from filejobs.testing.environment import base_env
from filejobs.testing.processes import START_TIMEOUT, ManagedProcess, ProcessError, gone, wait_gone

#: Celery's "<hostname> ready." line (``celery.apps.worker``), once the consumer is consuming.
READY = re.compile(r"\bfilejobs-(\d+)@\S+ ready\.")
CHILD_MODULE = "filejobs.jobs.child"


class WorkerError(ProcessError):
    pass


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


class Worker(ManagedProcess):
    """``filejobs worker --concurrency N [--pool P]``; use as a context manager (or call ``stop()``)."""

    error = WorkerError

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
        super().__init__(
            cwd=self.data_dir.parent,
            log_path=Path(log_path) if log_path else self.data_dir.parent / f"{name}.log",
            env=env,
            start_timeout=start_timeout,
            name=name,
        )
        self.concurrency = concurrency
        self.pool = pool

    def env(self) -> dict[str, str]:
        return base_env({"FILEJOBS_DATA_DIR": str(self.data_dir), **self.extra_env})

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "filejobs.cli", "worker", "--concurrency", str(self.concurrency)]
        if self.pool is not None:
            argv += ["--pool", self.pool]
        return argv

    def spawn(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().spawn()

    def is_ready(self) -> bool:
        """This process's "ready." line is in the latest start's log."""
        match = READY.search(self.current_log())
        return bool(match and int(match.group(1)) == self.pid)

    # ---- its processes ---------------------------------------------------------------------

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
