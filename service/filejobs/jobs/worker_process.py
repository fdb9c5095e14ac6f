"""The local worker pool in a process of its own (``FILEJOBS_WORKER_PROCESS=true``).

In the API process the pool's threads (claim, run, finish) share one GIL with the event loop and
the group committer; here they run beside it, in a process the API process spawns, feeds and
supervises (:class:`WorkerProcess`, its dispatcher). The row stays the truth: ids only cross the
pipe, the sweeper (in the API process) offers every due queued job again, and a job this process
claimed and did not finish goes back to the queue when its lease expires, as with any dead worker.

The pipe, one line per message: the API process writes the :class:`~filejobs.settings.Settings`
(JSON) first, then ``run <id>`` and ``cancel <id>`` to the worker process's stdin; the worker
process writes ``changed <id>`` to its stdout for every change of a job it made, which wakes the
API process's long-polls, event streams and webhook sender at once (on SQLite they would otherwise
wait for the change feed's next poll). EOF on stdin (the API process closed it or died, even by
SIGKILL) stops the pool as a shutdown does: running jobs get ``SHUTDOWN_GRACE``, then go back to
the queue. A worker process that exits alone is started again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

from filejobs import metrics
from filejobs.db import Database
from filejobs.jobs.executor import child_env
from filejobs.jobs.worker import LocalWorker
from filejobs.processors.registry import build_registry
from filejobs.settings import Settings
from filejobs.storage import open_storage

log = logging.getLogger(__name__)

RUN, CANCEL, CHANGED = "run", "cancel", "changed"
#: Seconds between a worker process's death and the start of the next (a process that cannot
#: start is not restarted in a busy loop).
RESTART_DELAY = 1.0
#: Seconds beyond ``SHUTDOWN_GRACE`` the API process waits for the worker process to stop.
STOP_MARGIN = 10.0


def encode(kind: str, job_id: str) -> bytes:
    """One message: ``kind`` (:data:`RUN`, :data:`CANCEL` or :data:`CHANGED`) and a job id."""
    return f"{kind} {job_id}\n".encode()


def decode(line: bytes) -> tuple[str, str]:
    """``(kind, job_id)`` of one message line."""
    kind, _, job_id = line.decode().strip().partition(" ")
    return kind, job_id


class WorkerProcess:
    """The local backend's dispatcher when the pool runs in a process of its own: spawns it,
    writes it ids and cancel hints, hears its changes, starts it again if it dies alone."""

    name = "local"
    check_name = "dispatcher"
    durable = False

    def __init__(self, settings: Settings, *, on_change: Callable[[str], None] = lambda job_id: None) -> None:
        self.settings = settings
        self.size = settings.workers
        self._on_change = on_change
        self._lock = threading.Lock()
        self._closed = threading.Event()
        #: Messages a full pipe did not take (a stalled worker process).
        self.dropped = 0
        self._full = False
        self._proc: subprocess.Popen[bytes] | None = self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="filejobs-worker-process", daemon=True)
        self._watch.start()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        level = logging.getLevelName(logging.getLogger("filejobs").getEffectiveLevel())
        proc = subprocess.Popen(
            [sys.executable, "-m", "filejobs.jobs.worker_process", level],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
            close_fds=True,
            bufsize=0,
        )
        assert proc.stdin is not None
        proc.stdin.write(self.settings.model_dump_json().encode() + b"\n")  # an empty pipe takes it
        # From now on a write never waits (submit runs on the event loop): a message a full pipe
        # cannot take is dropped, its job left queued for the sweeper's next offer.
        os.set_blocking(proc.stdin.fileno(), False)
        log.info("worker process started (pid %d, %d worker(s))", proc.pid, self.size)
        return proc

    def _send(self, kind: str, job_id: str) -> None:
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                return  # between two worker processes: the sweeper offers the queued job again
            # A dead worker process: its successor gets the job from the sweeper.
            with contextlib.suppress(OSError, ValueError):
                # One line is under PIPE_BUF: written whole or (a full pipe) not at all.
                if proc.stdin.write(encode(kind, job_id)) is not None:
                    self._full = False
                    return
                self.dropped += 1
                if not self._full:  # once until a line goes through again (a sweep offers them all)
                    self._full = True
                    log.warning(
                        "the worker process is not reading (its pipe is full): ids are left queued "
                        "for the sweeper's next offer until it reads again"
                    )

    def submit(self, job_id: str) -> None:
        self._send(RUN, job_id)

    def cancelled(self, job_id: str) -> None:
        self._send(CANCEL, job_id)

    def check(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise ConnectionError("the worker process is not running (it is being started again)")

    def pending_messages(self) -> int | None:
        return None

    def _supervise(self) -> None:
        while True:
            proc = self._proc
            assert proc is not None
            assert proc.stdout is not None
            for line in proc.stdout:
                kind, job_id = decode(line)
                if kind == CHANGED:
                    self._on_change(job_id)
            code = proc.wait()
            metrics.mark_process_dead(proc.pid, self.settings.prometheus_multiproc_dir)
            if self._closed.is_set():
                return
            log.error("the worker process (pid %d) exited with %s; starting another", proc.pid, code)
            with self._lock:
                self._proc = None
            if self._closed.wait(RESTART_DELAY):
                return
            with self._lock:
                if self._closed.is_set():
                    return
                try:
                    self._proc = self._spawn()
                except OSError:
                    log.exception("the worker process could not be started; no jobs run here")
                    return

    def close(self) -> None:
        """Stop the worker process as a shutdown stops the pool (running jobs get
        ``SHUTDOWN_GRACE``), then return."""
        with self._lock:
            self._closed.set()
            proc = self._proc
            if proc is not None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        if proc is not None:
            try:
                proc.wait(self.settings.shutdown_grace + STOP_MARGIN)
            except subprocess.TimeoutExpired:
                log.error("the worker process (pid %d) did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._watch.join()


def serve(commands: IO[bytes], notices: IO[bytes]) -> None:
    """The worker process: read the settings and then messages from ``commands`` until EOF, run
    the jobs, write their changes to ``notices``."""
    settings = Settings.model_validate_json(commands.readline())
    db = Database(settings.resolved_database_url)
    lock = threading.Lock()

    def changed(job_id: str) -> None:
        with lock, contextlib.suppress(OSError, ValueError):  # the API process is gone: EOF follows
            notices.write(encode(CHANGED, job_id))

    worker = LocalWorker(
        db=db,
        storage=open_storage(settings),
        registry=build_registry(settings.processors),
        settings=settings,
        on_change=changed,
    )
    worker.start()
    try:
        for line in commands:
            kind, job_id = decode(line)
            if kind == RUN:
                worker.submit(job_id)
            elif kind == CANCEL:
                worker.hint_cancelled(job_id)
    finally:
        worker.stop()
        db.dispose()


def main() -> None:
    level = sys.argv[1] if len(sys.argv) > 1 else "INFO"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ctrl-C reaches the whole process group: the API process stops this one by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The notices get stdout's pipe; anything else printed (an inline processor's) goes to stderr.
    notices = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    serve(sys.stdin.buffer, notices)


if __name__ == "__main__":
    main()
