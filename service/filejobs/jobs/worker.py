"""The local backend's worker pool: N threads, each owning one child process.

Threads only wait: on the queue of job ids, and on their child's pipe. The processor runs in the
child (a light one on a small input in the thread itself: :mod:`filejobs.jobs.inline`). A succeeded
job's final status is handed to the pool's :class:`~filejobs.jobs.finisher.Finisher`, which commits
the successes of all threads in batches while the threads go on to their next jobs.
``drain()`` is the burst mode for tests and scripts: run every due job, then return.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs.executor import ChildError
from filejobs.jobs.finisher import Finisher, Finishes, next_batch
from filejobs.jobs.repository import Claimed
from filejobs.jobs.runner import RunContext, run_claimed, run_job
from filejobs.models import JobStatus, utcnow
from filejobs.processors.registry import Registry
from filejobs.settings import Settings
from filejobs.storage import Storage

log = logging.getLogger(__name__)

#: Most ids a worker thread claims in one transaction: those waiting in the queue when it takes
#: one (one turn of SQLite's write lock and one commit for all instead of one each).
CLAIM_BATCH = 8


def worker_identity() -> str:
    """host:pid:random, unique per pool; lease owners are this plus the thread number."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LocalWorker:
    def __init__(
        self,
        *,
        db: Database,
        storage: Storage,
        registry: Registry,
        settings: Settings,
        on_change: Callable[[str], None] = lambda job_id: None,
        threads: int | None = None,
        committer: Finishes | None = None,
    ) -> None:
        self.db = db
        self.storage = storage
        self.registry = registry
        self.settings = settings
        self.on_change = on_change
        self.size = settings.workers if threads is None else threads
        self.identity = worker_identity()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pending: set[str] = set()
        #: Ids put back in the queue by a thread that took them with others and could not claim
        #: them together (heavier jobs, say): claimed one by one from then on, never in a batch again.
        self._alone: set[str] = set()
        #: What may be claimed together: light processors' jobs run in a thread in moments.
        self._light = [entry.processor.name for entry in registry if entry.processor.light]
        self._cancelled: set[str] = set()
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()
        self._accepting = threading.Event()
        self._must_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Commits the pool's succeeded jobs in batches (:mod:`filejobs.jobs.finisher`): the API
        #: process's group committer when there is one (``committer``), else one of our own per start.
        self.committer = committer
        self._finisher: Finisher | None = None

    def context(self, index: int, finisher: Finishes | None = None) -> RunContext:
        return RunContext(
            db=self.db,
            storage=self.storage,
            registry=self.registry,
            settings=self.settings,
            owner=f"{self.identity}:{index}",
            on_change=self.on_change,
            cancel_hint=self._was_cancelled,
            must_stop=self._must_stop.is_set,
            finisher=finisher,
        )

    # ---- control --------------------------------------------------------------------------

    def start(self) -> None:
        self._accepting.set()
        finisher: Finishes
        if self.committer is not None:
            finisher = self.committer
        else:
            finisher = self._finisher = Finisher(self.db)
        for index in range(self.size):
            thread = threading.Thread(
                target=self._loop, args=(index, finisher), name=f"filejobs-worker-{index}"
            )
            thread.start()
            self._threads.append(thread)

    def submit(self, job_id: str) -> None:
        """Queue ``job_id`` (once: ids already waiting are not queued again)."""
        if not self._accepting.is_set():
            return
        with self._lock:
            if job_id in self._pending:
                return
            self._pending.add(job_id)
        self._queue.put(job_id)

    def submit_at(self, job_id: str, when: datetime) -> None:
        delay = max(0.0, (when - utcnow()).total_seconds())
        timer = threading.Timer(delay, self._fire_timer, args=(job_id,))
        timer.daemon = True
        with self._lock:
            old = self._timers.pop(job_id, None)
            self._timers[job_id] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def _fire_timer(self, job_id: str) -> None:
        with self._lock:
            self._timers.pop(job_id, None)
        self.submit(job_id)

    def hint_cancelled(self, job_id: str) -> None:
        """The API cancelled or deleted ``job_id``: the thread running it checks at once."""
        with self._lock:
            self._cancelled.add(job_id)

    def _was_cancelled(self, job_id: str) -> bool:
        with self._lock:
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                return True
        return False

    def stop(self, grace: float | None = None) -> None:
        """Stop taking jobs; let running ones finish for ``grace`` s, then return them to the queue."""
        grace = self.settings.shutdown_grace if grace is None else grace
        self._accepting.clear()
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()
        while True:  # drop ids not yet started: their rows stay queued
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with self._lock:
            self._alone.clear()
        for _ in self._threads:
            self._queue.put(None)
        deadline = threading.Timer(grace, self._must_stop.set)
        deadline.daemon = True
        deadline.start()
        for thread in self._threads:
            thread.join()
        deadline.cancel()
        self._threads.clear()
        if self._finisher is not None:  # the successes the threads handed over are committed
            # (a shared committer commits them before it closes, after this pool has stopped)
            self._finisher.close()
            self._finisher = None

    # ---- running --------------------------------------------------------------------------

    def _loop(self, index: int, finisher: Finishes) -> None:
        ctx = self.context(index, finisher)
        try:
            ctx.child.start()
        except (ChildError, OSError):
            log.exception("worker %d: child process failed to start; will retry per job", index)
        try:
            while True:
                # The next id (waited for) and those waiting with it, up to CLAIM_BATCH.
                ids, stop = next_batch(self._queue, CLAIM_BATCH)
                with self._lock:
                    self._pending.difference_update(ids)
                    alone = [i for i in ids if i in self._alone]
                    self._alone.difference_update(alone)
                if ids and self._accepting.is_set():
                    self._run_taken(ids, alone, ctx)
                if stop:
                    return
        finally:
            ctx.child.kill()

    def _run_taken(self, ids: list[str], alone: list[str], ctx: RunContext) -> None:
        """Run the ids one thread took from the queue together. The light jobs on small inputs
        among them (:func:`~filejobs.jobs.inline.runs_inline`: moments each, in this thread) are
        claimed in one transaction and run first; of the others (heavier, not yet due, taken,
        gone, or put back before) this thread claims and runs the first, and puts the rest back in
        the queue for any free thread, unclaimed: their rows are untouched."""
        others = [job_id for job_id in ids if job_id not in alone]
        if len(others) > 1 and self._light and self.settings.inline_max_bytes > 0:
            others = self._run_quick(others, ctx)
        others += alone
        for job_id in others[1:]:
            self._put_back(job_id)
        if others and self._accepting.is_set():
            self._run(others[0], ctx)

    def _run_quick(self, ids: list[str], ctx: RunContext) -> list[str]:
        """Claim the quick jobs among ``ids`` together and run them; the ids not claimed."""
        try:
            claims = repository.claim_quick_jobs(
                ctx.db,
                ids,
                owner=ctx.owner,
                lease_seconds=ctx.settings.lease_seconds,
                light=self._light,
                max_bytes=self.settings.inline_max_bytes,
            )
        except Exception:
            log.exception("claiming %d jobs together failed; claiming them one by one", len(ids))
            return ids
        unclaimed: list[str] = []
        for job_id, job in zip(ids, claims, strict=True):
            if job is None:
                unclaimed.append(job_id)
            elif self._accepting.is_set():
                self._run(job_id, ctx, job)
            else:  # stopping: claimed, not started
                self._release(job_id, ctx)
        return unclaimed

    def _put_back(self, job_id: str) -> None:
        """Back in the queue, to be claimed alone (no row is touched: it was not claimed)."""
        if not self._accepting.is_set():
            return  # stopping: its row stays queued, as the ids dropped by stop()
        with self._lock:
            if job_id in self._pending:
                return  # offered again meanwhile: already waiting
            self._pending.add(job_id)
            self._alone.add(job_id)
        self._queue.put(job_id)

    def _release(self, job_id: str, ctx: RunContext) -> None:
        try:
            repository.release_job(ctx.db, job_id, owner=ctx.owner)
        except Exception:
            log.exception("job %s: could not be returned to the queue; its lease will", job_id)

    def _run(
        self, job_id: str, ctx: RunContext, claimed: Claimed | Literal[False] | None = False
    ) -> JobStatus | None:
        """Run ``job_id``: claim it first, or (``claimed``) what its claim with others returned."""
        try:
            ran = run_job(job_id, ctx) if claimed is False else run_claimed(job_id, claimed, ctx)
        except Exception:
            log.exception("job %s: the worker failed around it; the sweeper will pick it up", job_id)
            return None
        finally:
            with self._lock:
                self._cancelled.discard(job_id)
        if ran.due_at is not None and self._accepting.is_set():
            # Retried with backoff, or dispatched before it was due: come back when it is.
            self.submit_at(job_id, ran.due_at)
        return ran.status

    def drain(self) -> int:
        """Burst mode: run every due queued job in this thread until none is left; return how many."""
        ctx = self.context(0)
        ran = 0
        try:
            while True:
                ids = repository.due_job_ids(self.db)
                if not ids:
                    return ran
                progressed = False
                for job_id in ids:
                    if run_job(job_id, ctx).status is not None:
                        ran += 1
                        progressed = True
                if not progressed:
                    return ran
        finally:
            ctx.child.kill()
