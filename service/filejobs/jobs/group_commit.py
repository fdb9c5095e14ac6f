"""Group commit: the rows of uploads that finish together are inserted in one transaction.

A 202 promises a durable row, so each new job costs a synchronous commit (an fsync of SQLite's WAL,
a WAL flush on PostgreSQL) and, before it, an fsync of the ``uploads/`` directory holding its
renamed file. Done per upload, those fsyncs queue one behind the other and cap the accept rate at
one upload per fsync. Here one thread takes every insert waiting at that moment, fsyncs the
directory once, and commits them all in one transaction: under load N uploads share two fsyncs,
and alone an upload waits for no one.

Each job with a ``prepare`` (linking its file: :func:`filejobs.jobs.files.link`) that may fail on
its own, or a ``before_commit`` (an Idempotency-Key), runs in a savepoint of its own, so one that
lost its key (409) or whose content is gone (428) does not undo the others. Each upload's file is
moved into place first (its ``place``: fsync, rename; a small file its sink held in memory is
written then too) on a small pool as soon as its insert is queued, so the files' fsyncs overlap
each other and the batch being committed; then the batch's directory fsync.

The worker pool of the same process hands it jobs' final statuses too (:meth:`GroupCommitter.finish`,
the :class:`~filejobs.jobs.finisher.Finishes` of :mod:`filejobs.jobs.finisher`): they commit in the
same transactions as the new rows, so under load a batch of uploads and a batch of finished jobs
share one fsync instead of queueing for the write lock one fsync each. A batch's final statuses are
written in one savepoint; when one of them raises, they are written again each in a savepoint of
its own (that job is left to the sweeper, the others and the new rows commit). Each ``then`` runs
after the commit, on this thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Insert, insert
from sqlmodel import Session

from filejobs.db import Database
from filejobs.jobs.finisher import Alone, CommitThread, Finish, Then, Write
from filejobs.jobs.known_content import KnownContent
from filejobs.models import Job

log = logging.getLogger(__name__)

#: Files of one batch written and fsynced at once.
PLACE_THREADS = 8
_COLUMNS = tuple(Job.model_fields)
_COLUMN_SET = frozenset(_COLUMNS)


def row_values(job: Job) -> dict[str, Any]:
    """``job.model_dump()``: for a job made by :func:`filejobs.models.new_job` (every field in its
    ``__dict__``) read from there, at half the cost of pydantic's serializer."""
    state = job.__dict__
    if state.keys() >= _COLUMN_SET:
        return {name: state[name] for name in _COLUMNS}
    return job.model_dump()


BeforeCommit = Callable[[Session], None]
Prepare = Callable[[Session, dict[str, Any]], None]


class NothingWritten(Exception):
    """Raised by a ``prepare`` that refuses its job before it wrote anything in the transaction
    (e.g. the content an upload by hash names is gone): that job fails alone, without the cost of
    a savepoint of its own, and the batch commits."""


@dataclass
class _Insert:
    values: dict[str, Any]
    before_commit: BeforeCommit | None
    prepare: Prepare | None
    isolated: bool
    place: Callable[[], None] | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None] = field(repr=False)
    #: ``place`` running on the pool (started at once: it overlaps the batch being committed).
    placed: Future[BaseException | None] | None = field(default=None, repr=False)


class GroupCommitter(CommitThread[_Insert | Finish]):
    """One thread that inserts jobs in batches; ``await insert(job)`` returns once it committed."""

    what = "group committer"

    def __init__(self, db: Database, sync_dir: Callable[[], None]) -> None:
        super().__init__()
        self.db = db
        self.sync_dir = sync_dir
        self._insert = insert(Job.__table__)  # type: ignore[attr-defined]
        #: Places (writes, fsyncs, renames) the uploads' files in parallel.
        self._places = ThreadPoolExecutor(max_workers=PLACE_THREADS, thread_name_prefix="filejobs-place")
        #: Content committed lately (a hint: an upload of it need not write its bytes).
        self.known = KnownContent()
        self.batches = 0  # for tests and curiosity: transactions committed
        self.rows = 0
        self.finished = 0  # final statuses committed

    async def insert(
        self,
        job: Job,
        *,
        before_commit: BeforeCommit | None = None,
        place: Callable[[], None] | None = None,
        prepare: Prepare | None = None,
        isolated: bool | None = None,
    ) -> None:
        """Insert ``job`` durably: ``place`` (moving its file into ``uploads/``) first, then the
        directory's fsync, then the transaction: ``prepare`` (may change the row's values), the
        insert, ``before_commit``. Raise what ``place``, ``prepare``, ``before_commit`` or the
        database raised (then nothing of this job is committed). ``isolated`` (default: when there
        is a ``before_commit``) runs them in a savepoint of their own, for a job whose own failure
        must not undo the others'; without it, only a :class:`NothingWritten` from ``prepare``
        fails this job alone."""
        loop = asyncio.get_running_loop()
        isolated = before_commit is not None if isolated is None else isolated
        item = _Insert(row_values(job), before_commit, prepare, isolated, place, loop, loop.create_future())
        self._start()
        if place is not None:
            item.placed = self._places.submit(_place, place)
        self._queue.put(item)
        await asyncio.shield(item.future)  # a cancelled request must not lose track of its row

    def finish(self, write: Write, then: Then, alone: Alone | None = None) -> None:
        """Commit a job's final status (``write``, in the next batch's transaction: in one savepoint
        with the batch's other final statuses, see :func:`_write_finals`), then call ``then`` with
        what it returned (None: not committed) on this object's thread.
        Returns at once; RuntimeError once closed. ``alone`` is not used: here a final status shares
        its transaction with new jobs' rows, one commit for all."""
        self._start()
        self._queue.put(Finish(write, then))

    def close(self, timeout: float | None = None) -> bool:
        """Commit what is queued, then stop the thread (see :meth:`CommitThread.close`)."""
        stopped = super().close(timeout)
        self._places.shutdown()
        return stopped

    # ---- the committing thread --------------------------------------------------------------------

    def _take(self, batch: list[_Insert | Finish]) -> None:
        self._commit(batch)

    def _commit(self, items: list[_Insert | Finish]) -> None:
        batch = [item for item in items if isinstance(item, _Insert)]
        finishes = [item for item in items if isinstance(item, Finish)]
        # Each file was being moved into place since its insert was queued (its fsync beside
        # the previous batch's); the directory's fsync must follow them all.
        outcomes = [item.placed.result() if item.placed is not None else None for item in batch]
        finished: list[bool | None] = [None] * len(finishes)
        try:
            if any(item.place is not None for item in batch):  # no file moved: nothing to sync
                self.sync_dir()
            with self.db.write() as session:
                rows = _Rows(session, self._insert)
                for index, item in enumerate(batch):
                    if outcomes[index] is not None:
                        continue
                    if not item.isolated:
                        if item.prepare is not None:
                            try:
                                item.prepare(session, item.values)
                            except NothingWritten as exc:  # refused before it wrote: this job only
                                outcomes[index] = exc
                                continue
                        rows.add(item.values)
                        if item.before_commit is not None:
                            rows.flush()  # it may read the job's row
                            item.before_commit(session)
                        continue
                    rows.flush()  # the savepoint holds this job's writes only
                    nested = session.begin_nested()
                    try:
                        if item.prepare is not None:
                            item.prepare(session, item.values)
                        session.connection().execute(self._insert, [item.values])
                        if item.before_commit is not None:
                            item.before_commit(session)
                    except Exception as exc:  # this job's own failure (its key was taken over)
                        nested.rollback()
                        outcomes[index] = exc
                    else:
                        nested.commit()
                rows.flush()
                if finishes:
                    finished = _write_finals(session, [finish.write for finish in finishes])
            self.batches += 1
            self.rows += sum(1 for outcome in outcomes if outcome is None)
            self.finished += sum(1 for written in finished if written)
        except BaseException as exc:  # the transaction failed: no row of the batch is in
            log.warning(
                "committing %d new job(s), %d final status(es) failed: %r", len(batch), len(finishes), exc
            )
            outcomes = [outcome or exc for outcome in outcomes]
            finished = [None] * len(finishes)  # left running: the sweeper queues them again
        for item, outcome in zip(batch, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # its event loop is gone (shut down)
                item.loop.call_soon_threadsafe(_settle, item.future, outcome)
        for finish, written in zip(finishes, finished, strict=True):
            try:
                finish.then(written)
            except Exception:
                log.exception("after a job's final status: its follow-up failed")


class _Rows:
    """New jobs' rows waiting to be inserted in one ``executemany`` (a statement per row cost the
    committer's thread a third of its time in SQLAlchemy's per-statement work). A job's own writes
    (its file's row, a small upload's bytes) go first. No ``prepare`` needs the rows of the batch's
    new jobs: a later upload of the same content finds the file's row, and a result to reuse is
    taken from a job that ran (one reused in this batch took its result from such a job, which
    :func:`filejobs.jobs.files.link` prefers). A ``before_commit`` and a savepoint come after a
    :meth:`flush`."""

    def __init__(self, session: Session, statement: Insert) -> None:
        self._session = session
        self._statement = statement
        self._rows: list[dict[str, Any]] = []

    def add(self, values: dict[str, Any]) -> None:
        self._rows.append(values)

    def flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self._session.connection().execute(self._statement, rows)


def _write_finals(session: Session, writes: list[Write]) -> list[bool | None]:
    """A batch's final statuses, all in one savepoint: what each ``write`` returned. If one raises,
    that savepoint is undone and each is written again in a savepoint of its own, so only the one
    that raises is left out (None). A savepoint per final status cost more than its ``UPDATE``."""
    nested = session.begin_nested()
    try:
        written: list[bool | None] = [write(session) for write in writes]
    except Exception:
        nested.rollback()
        return [_write_final(session, write) for write in writes]
    nested.commit()
    return written


def _write_final(session: Session, write: Write) -> bool | None:
    """One job's final status in a savepoint: what ``write`` returned, None if it raised (undone)."""
    nested = session.begin_nested()
    try:
        written = write(session)
    except Exception:
        nested.rollback()
        log.exception("a job's final status could not be written; the sweeper will take it")
        return None
    nested.commit()
    return written


def _place(place: Callable[[], None]) -> BaseException | None:
    """Move one upload's file into place; its error (e.g. a full disk) fails this job only."""
    try:
        place()
    except Exception as exc:
        return exc
    return None


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)
