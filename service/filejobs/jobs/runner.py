"""``run_job(job_id)``: claim, run the processor in a child process (a light one on a small input:
in this thread, :mod:`filejobs.jobs.inline`), record the outcome.

Shared by the local worker pool and the Celery task. Every write is conditional on the row
still being ``running`` under our lease, so a cancel, a delete, or a sweeper that gave the job
to someone else makes the next write fail, and we stop the child and clean up after ourselves.
"""

from __future__ import annotations

import logging
import mimetypes
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from filejobs import metrics
from filejobs.db import Database
from filejobs.jobs import files, inline_uploads, repository
from filejobs.jobs.executor import ChildProcess, Control, Outcome
from filejobs.jobs.finisher import Finishes
from filejobs.jobs.inline import run_inline, runs_inline
from filejobs.jobs.messages import Done, Failed, RunRequest
from filejobs.jobs.repository import Claimed
from filejobs.models import JobStatus, utcnow
from filejobs.processors.base import Limits
from filejobs.processors.registry import Registry
from filejobs.settings import Settings
from filejobs.storage import Storage, StorageUnavailable, Workspace

log = logging.getLogger(__name__)

#: An attempt whose input or output the storage backend could not move: tried again later.
STORAGE_FAILED = Failed("storage_unavailable", "The file storage could not be reached.", retryable=True)
#: How often a running job proves it is still ours (and renews its lease) when it is quiet.
CHECK_EVERY = 1.0


@dataclass
class RunContext:
    """What ``run_job`` needs besides the id; one per worker thread (or Celery process)."""

    db: Database
    storage: Storage
    registry: Registry
    settings: Settings
    owner: str
    on_change: Callable[[str], None] = lambda job_id: None
    #: True when this process was told the job was cancelled or deleted (a fast path).
    cancel_hint: Callable[[str], bool] = lambda job_id: False
    #: True once shutdown's grace period is over: stop the child, return the job to the queue.
    must_stop: Callable[[], bool] = lambda: False
    child: ChildProcess = field(default_factory=ChildProcess)
    #: Commits a succeeded job's final status in a batch with others (the local pool's); None: the
    #: thread that ran the job commits it and waits (Celery's workers, burst mode).
    finisher: Finishes | None = None


@dataclass(frozen=True, slots=True)
class Ran:
    """What :func:`run_job` left: the job's status (None: not claimed, or no longer ours) and, for
    a job left queued to be retried or not yet due, when to offer it again (None: no need)."""

    status: JobStatus | None
    due_at: datetime | None = None
    #: The status is handed to ``RunContext.finisher`` and not committed yet: the finisher records
    #: the attempt (metrics, change hook, log) once it is.
    finishing: bool = False


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """Exponential backoff with ±20 % jitter, capped."""
    base = min(settings.retry_backoff_max, settings.retry_backoff * 2.0 ** max(0, attempts - 1))
    return base * random.uniform(0.8, 1.2)


def run_job(job_id: str, ctx: RunContext) -> Ran:
    """Run one job if it can be claimed; the status it was left in and when it is due again."""
    job = repository.claim_job(ctx.db, job_id, owner=ctx.owner, lease_seconds=ctx.settings.lease_seconds)
    return run_claimed(job_id, job, ctx)


def run_claimed(job_id: str, job: Claimed | None, ctx: RunContext) -> Ran:
    """:func:`run_job` after its claim: ``job`` is what the claim of ``job_id`` returned."""
    if job is None:
        return Ran(None, _not_yet_due(ctx, job_id))
    claimed_at = time.monotonic()
    ctx.on_change(job_id)
    log.info("job %s: running %s (attempt %d)", job_id, job.processor, job.attempts)
    ran: Ran | None = None
    try:
        ran = _execute(job, ctx, claimed_at)
    finally:
        if ran is None or not ran.finishing:
            ctx.on_change(job_id)
    if ran.finishing:
        return ran
    status = ran.status
    metrics.job_attempt_ended(job.processor, status, time.monotonic() - claimed_at)
    log.info("job %s: %s", job_id, status.value if status else "no longer ours")
    if status is None:  # given to someone else, or delivered before it was due
        return Ran(None, _not_yet_due(ctx, job_id))
    return ran


def _not_yet_due(ctx: RunContext, job_id: str) -> datetime | None:
    """When to offer the queued job ``job_id`` again, after a claim that did not take it: when it
    comes due, or now if it already has (None: not queued). A job whose claim came just before its
    ``run_after`` (a timer fires at that instant) is due by the time this reads it, and must be
    offered again, not dropped: nothing else would offer it until the sweeper's next pass."""
    job = repository.get_job(ctx.db, job_id)
    if job is None or job.status != JobStatus.queued.value:
        return None
    return max(job.run_after, utcnow())


def _fail(ctx: RunContext, job: Claimed, failure: Failed) -> Ran:
    outcome = repository.finish_failed(
        ctx.db,
        job.id,
        owner=ctx.owner,
        code=failure.code,
        message=failure.message,
        retryable=failure.retryable,
        backoff=backoff_seconds(ctx.settings, job.attempts),
        max_pending_webhooks=ctx.settings.webhook_max_pending,
    )
    if not outcome.owned:
        return _lost(ctx, job)
    if outcome.status is JobStatus.queued:
        metrics.job_retried(job.processor)
    later = outcome.run_after is not None and outcome.run_after > utcnow()
    return Ran(outcome.status, outcome.run_after if later else None)


def _lost(ctx: RunContext, job: Claimed) -> Ran:
    """The row is no longer ours: remove what this attempt wrote (everything if the row is gone)."""
    if not repository.job_exists(ctx.db, job.id):
        # Deleted: what is stored under its id and no other job references (its input may be shared).
        files.collect(ctx.storage, files.unreferenced(ctx.db, [job.id]))
    else:
        ctx.storage.delete_outputs(job.id, job.attempts)
    return Ran(None)


def _execute(job: Claimed, ctx: RunContext, claimed_at: float) -> Ran:
    entry = ctx.registry.get(job.processor)
    if entry is None:
        return _fail(ctx, job, Failed("unknown_processor", f"No processor named {job.processor!r} here."))
    # The workspace's scratch (an object store's input copy and outputs) goes however this ends.
    ticker = _Ticker(job.id, ctx)
    settings = ctx.settings
    # A light processor on a small input runs in this thread: no child round trip.
    inline = runs_inline(entry.processor, job.file_size, settings.inline_max_bytes)
    with ctx.storage.workspace(job.id, job.attempts) as workspace:
        try:
            if job.input_data is not None:  # a small upload kept in the database, read by the claim
                input_path = workspace.put_input(job.input_data, in_process=inline)
            elif inline_uploads.is_inline(job.storage_key):  # its bytes went (its jobs were deleted)
                raise FileNotFoundError(job.storage_key)
            else:
                input_path = workspace.fetch_input(job.storage_key, keep_alive=_keep_alive(ticker))
        except _Interrupted as stop:  # shutdown's grace over, or the job was taken from us
            if stop.control == Control.STOP and repository.release_job(ctx.db, job.id, owner=ctx.owner):
                return Ran(JobStatus.queued)
            return _lost(ctx, job)
        except FileNotFoundError:
            return _fail(ctx, job, Failed("input_missing", "The uploaded file is no longer stored."))
        except StorageUnavailable as exc:
            log.warning("job %s: cannot fetch its input: %s", job.id, exc)
            return _fail(ctx, job, STORAGE_FAILED)
        request = RunRequest(
            spec=entry.spec,
            input=str(input_path),
            # Made by the child when the processor first asks for it: most jobs write no file.
            output_dir=str(workspace.output_dir(create=False)),
            params={**job.params, **(job.secret_params or {})},
            file_name=job.file_name,
            # Sniffed by the API from the same bytes when they were stored (an upload by hash: the
            # type of the stored content it names), as the ``inspect`` processor would sniff them.
            content_type=job.file_content_type,
            content_type_sniffed=True,
            limits=Limits(
                max_image_pixels=settings.max_image_pixels,
                max_pdf_pages=settings.max_pdf_pages,
                # The child's RLIMIT_AS for this job; none in this thread (a light processor's bound).
                memory_bytes=0 if inline else settings.job_memory_limit,
            ),
        )
        # One ticker for the whole attempt (input fetched, run, output stored): one lease cadence.
        if inline:
            outcome = run_inline(request, tick=ticker, timeout=settings.job_timeout)
        else:
            outcome = ctx.child.run(
                request, tick=ticker, timeout=settings.job_timeout, cancel_grace=settings.cancel_grace
            )
        return _record(job, ctx, outcome, workspace, ticker, claimed_at)


def _record(
    job: Claimed, ctx: RunContext, outcome: Outcome, workspace: Workspace, ticker: _Ticker, claimed_at: float
) -> Ran:
    if isinstance(outcome.reply, Done):
        return _succeeded(job, ctx, outcome.reply, workspace, ticker, claimed_at)
    if isinstance(outcome.reply, Failed):  # error, timeout, crashed
        return _fail(ctx, job, outcome.reply)
    if outcome.kind == "stopped" and repository.release_job(ctx.db, job.id, owner=ctx.owner):
        return Ran(JobStatus.queued)  # due now: whoever takes the queue next runs it
    return _lost(ctx, job)  # cancelled: we stopped it because the row was no longer ours


def _succeeded(
    job: Claimed, ctx: RunContext, done: Done, workspace: Workspace, ticker: _Ticker, claimed_at: float
) -> Ran:
    output_key = output_name = content_type = None
    if done.file:
        path = Path(done.file)
        try:  # a large output going up to a bucket: the lease renewed meanwhile, as for the input
            output_key = workspace.save_output(path, keep_alive=_keep_alive(ticker))
        except _Interrupted as stop:  # shutdown's grace over, or the job was taken from us
            if stop.control == Control.STOP and repository.release_job(ctx.db, job.id, owner=ctx.owner):
                ctx.storage.delete_outputs(job.id, job.attempts)
                return Ran(JobStatus.queued)
            return _lost(ctx, job)
        except StorageUnavailable as exc:
            log.warning("job %s: cannot store its output: %s", job.id, exc)
            return _fail(ctx, job, STORAGE_FAILED)
        output_name = done.file_name or path.name
        guessed = mimetypes.guess_type(output_name)[0]
        content_type = done.content_type or guessed or "application/octet-stream"
    params = repository.succeeded_params(
        job.id,
        owner=ctx.owner,
        result=done.result or {},
        output_key=output_key,
        output_name=output_name,
        output_content_type=content_type,
    )
    max_pending = ctx.settings.webhook_max_pending
    if ctx.finisher is not None:

        def write(session: Session) -> bool:
            return repository.succeed_in(session, params, max_pending_webhooks=max_pending)

        alone = partial(repository.succeed_alone, ctx.db, params)
        ctx.finisher.finish(write, partial(_finished, job, ctx, claimed_at), alone)
        return Ran(JobStatus.succeeded, finishing=True)
    with ctx.db.write() as session:
        owned = repository.succeed_in(session, params, max_pending_webhooks=max_pending)
    return Ran(JobStatus.succeeded) if owned else _lost(ctx, job)


def _finished(job: Claimed, ctx: RunContext, claimed_at: float, owned: bool | None) -> None:
    """After the finisher's commit of ``job``'s success (on its thread): what :func:`run_job` does
    after a status it committed itself."""
    try:
        if owned is False:
            _lost(ctx, job)
    finally:
        ctx.on_change(job.id)
    if owned is None:  # not committed: the job stays running until its lease runs out
        log.warning("job %s: its success could not be recorded; the sweeper will queue it again", job.id)
        return
    status = JobStatus.succeeded if owned else None
    metrics.job_attempt_ended(job.processor, status, time.monotonic() - claimed_at)
    log.info("job %s: %s", job.id, status.value if status else "no longer ours")


class _Interrupted(Exception):
    """Raised by :func:`_keep_alive` to stop copying a job's input or output: ``control`` says why."""

    def __init__(self, control: str) -> None:
        super().__init__(control)
        self.control = control


def _keep_alive(ticker: _Ticker) -> Callable[[], None]:
    """While a job's input is copied to the worker (or its output from it): its lease renewed
    (every CHECK_EVERY s, as while it runs), and the copy stopped once the job is no longer ours or
    shutdown's grace is over."""

    def check() -> None:
        control = ticker(None, None)
        if control != Control.CONTINUE:
            raise _Interrupted(control)

    return check


class _Ticker:
    """Called by the executor several times a second while the child runs."""

    def __init__(self, job_id: str, ctx: RunContext) -> None:
        self.job_id = job_id
        self.ctx = ctx
        self.last_write = time.monotonic()
        self.pending: tuple[float, str | None] | None = None

    def __call__(self, progress: float | None, message: str | None) -> str:
        ctx = self.ctx
        if ctx.must_stop():
            return Control.STOP
        if progress is not None:
            keep = message if message is not None else (self.pending[1] if self.pending else None)
            self.pending = (progress, keep)
        now = time.monotonic()
        hinted = ctx.cancel_hint(self.job_id)
        due_progress = self.pending is not None and now - self.last_write >= ctx.settings.progress_interval
        if not (hinted or due_progress or now - self.last_write >= CHECK_EVERY):
            return Control.CONTINUE
        self.last_write = now
        try:
            if self.pending is not None:
                fraction, text = self.pending
                self.pending = None
                owned = repository.set_progress(
                    ctx.db,
                    self.job_id,
                    owner=ctx.owner,
                    progress=fraction,
                    message=text,
                    lease_seconds=ctx.settings.lease_seconds,
                )
                ctx.on_change(self.job_id)
            else:
                owned = repository.renew_lease(
                    ctx.db, self.job_id, owner=ctx.owner, lease_seconds=ctx.settings.lease_seconds
                )
        except SQLAlchemyError:
            log.exception("job %s: could not write progress; will try again", self.job_id)
            return Control.CONTINUE
        return Control.CONTINUE if owned else Control.CANCEL
