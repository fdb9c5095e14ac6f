"""Group commit of final statuses: the jobs of a worker pool that finish together commit in one transaction.

A job's final status is a synchronous commit (an fsync of SQLite's WAL, a WAL flush on
PostgreSQL), and so is every new job's row (:mod:`filejobs.jobs.group_commit`); on SQLite they
all queue for the one write lock. Committed one per job by the worker thread that ran it, each
finish held that lock for an fsync while the thread, and the next job, waited. Here the worker
thread hands its job's final-status change to one thread and goes on to its next job; that thread
takes every change waiting at that moment and commits them in one transaction: under load N
finishes share one fsync.

Nothing observable says a job is final before its commit: the change (the conditional UPDATE and,
in the same transaction, the webhook outbox rows of :func:`~filejobs.webhooks.outbox.record_job_event`)
is only written here, and each job's ``then`` (its metrics, its change hook, the clean-up of a job
that was no longer ours) runs after the commit returned. A process killed before the commit
leaves the job ``running`` under its lease, as a kill between the child's answer and the commit
always did: the sweeper queues it again.

One job whose change raises (not the commit) does not take the others with it: the batch is
written again one job per transaction, and only that job is left to the sweeper. A commit that
raised is not retried (whether it landed is unknown): every job of the batch is left to the sweeper.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlmodel import Session

from filejobs.db import Database

log = logging.getLogger(__name__)

#: Most final statuses (or new rows) in one transaction.
MAX_BATCH = 256

T = TypeVar("T")


def next_batch(waiting: queue.Queue[Any] | queue.SimpleQueue[Any], most: int) -> tuple[list[Any], bool]:
    """What a committing thread takes at once: the next item (waited for), then whatever else is
    already waiting, up to ``most``; and whether ``None`` (stop) was met meanwhile (an empty batch
    when it came first)."""
    first = waiting.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < most:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


class CommitThread(Generic[T]):
    """One thread, started on first use, that takes what is queued in batches (:func:`next_batch`,
    up to :data:`MAX_BATCH`) and hands each to :meth:`_take`; :meth:`close` lets it take what is
    queued, then stops it. Subclasses queue with ``self._start()`` then ``self._queue.put(item)``."""

    #: In the thread's name and in the error raised once closed.
    what = "committer"

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def _start(self) -> None:
        """The thread started if it was not; RuntimeError once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the {self.what} is closed")
            if self._thread is None:
                name = f"filejobs-{self.what.replace(' ', '-')}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()

    def close(self, timeout: float | None = None) -> bool:
        """Take what is queued, then stop the thread; False when it had not stopped after
        ``timeout`` seconds (None: wait as long as it takes)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return True
        self._queue.put(None)
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            batch: list[T]
            batch, stop = next_batch(self._queue, MAX_BATCH)
            if not batch:
                return
            self._take(batch)
            if stop:
                return

    def _take(self, batch: list[T]) -> None:
        raise NotImplementedError


#: Writes one job's final status in the given session's transaction; False: the job is no longer
#: ours (cancelled, deleted, or given to another worker), nothing was written.
Write = Callable[[Session], bool]
#: Called after the commit with what :data:`Write` returned, or None when the change could not be
#: committed (the job stays ``running``; its lease runs out and the sweeper queues it again).
Then = Callable[[bool | None], None]
#: Writes and commits one job's final status by itself, in one statement (a commit with no
#: transaction round trips around it); False: it wrote nothing, :data:`Write` must run (the job is
#: no longer ours, or its change needs more than that statement, e.g. webhook outbox rows).
Alone = Callable[[], bool]


class Finishes(Protocol):
    """What commits final statuses in batches: a :class:`Finisher`, or the API process's
    :class:`~filejobs.jobs.group_commit.GroupCommitter` (new jobs' rows and final statuses share its
    transactions)."""

    def finish(self, write: Write, then: Then, alone: Alone | None = None) -> None:
        """Commit ``write`` soon, with others; then call ``then`` (on the committing thread).
        ``alone``, if given, may be used instead when nothing else is waiting."""


@dataclass(frozen=True, slots=True)
class Finish:
    write: Write
    then: Then
    alone: Alone | None = None


class Finisher(CommitThread[Finish]):
    """One thread that commits final statuses in batches; :meth:`finish` returns at once."""

    what = "finisher"

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        self.batches = 0  # for tests and curiosity: transactions committed
        self.rows = 0

    def finish(self, write: Write, then: Then, alone: Alone | None = None) -> None:
        """Commit ``write`` (with whatever else is waiting), then call ``then`` on this object's
        thread. When nothing else is waiting, ``alone`` (if given) is tried first: one statement
        instead of a transaction (a Celery worker's finishes mostly come one at a time)."""
        self._start()
        self._queue.put(Finish(write, then, alone))

    # ---- the committing thread ----------------------------------------------------------------

    def _take(self, batch: list[Finish]) -> None:
        for item, outcome in zip(batch, self._commit(batch), strict=True):
            try:
                item.then(outcome)
            except Exception:
                log.exception("after a job's final status: its follow-up failed")

    def _commit(self, batch: list[Finish]) -> list[bool | None]:
        """Write and commit ``batch`` in one transaction; if one write raised, each alone. A batch
        of one with an ``alone`` tries that first."""
        if len(batch) == 1 and batch[0].alone is not None:
            try:
                done = batch[0].alone()
            except Exception:  # whether it landed is unknown (as for a commit): not retried
                log.exception("a job's final status could not be written; the sweeper will take it")
                return [None]
            if done:
                self.batches += 1
                self.rows += 1
                return [True]
        written: list[bool] = []
        committing = False
        try:
            with self.db.write() as session:
                for item in batch:
                    written.append(item.write(session))
                committing = True
        except Exception:
            if committing:  # the commit itself: whether it landed is unknown, so nothing is retried
                log.exception("committing %d final status(es) failed; the sweeper will take them", len(batch))
                return [None] * len(batch)
            if len(batch) == 1:
                log.exception("a job's final status could not be written; the sweeper will take it")
                return [None]
            return [self._commit([item])[0] for item in batch]
        self.batches += 1
        self.rows += len(batch)
        return list(written)
