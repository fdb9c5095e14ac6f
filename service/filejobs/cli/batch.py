"""The engine of ``filejobs submit``: uploads N at a time, waits for every job, fetches results.

Every file is one :class:`FileState` moved along by at most one task at a time:

    prepare (hash; adopt the ledger's job if the file and options are unchanged)
      → submit (ledger ``submit`` with the Idempotency-Key, upload, ledger ``accepted``)
      → wait (a pool of waiters long-polls each job for :data:`WAIT_SLICE` s in turn)
      → result (``--results``) → done

At most ``concurrency`` files are being hashed or uploaded at once (each upload streams from disk),
and :func:`waiters` long-polls run at once, so memory stays flat however large the batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filejobs.cli.batch_options import (
    FATAL_STATUSES,
    GRACE,
    WAIT_SLICE,
    Fatal,
    Interrupted,
    Options,
    error,
    hash_file,
    waiters,
)
from filejobs.cli.by_hash import HashBatcher
from filejobs.cli.common import EXIT_FAILED, EXIT_USAGE, describe_problem
from filejobs.cli.display import Display
from filejobs.cli.ledger import FileState, Ledger
from filejobs.cli.reconcile import reconcile
from filejobs.cli.results import Results, exists
from filejobs.client import (
    AsyncClient,
    ByHash,
    FilejobsError,
    Job,
    ProblemError,
    TransportError,
    WaitTimeout,
)
from filejobs.client import idempotency_key as make_key


class Batch:
    def __init__(
        self,
        client: AsyncClient,
        states: list[FileState],
        options: Options,
        *,
        previous: dict[str, FileState] | None = None,
        ledger: Ledger | None = None,
        display: Display,
        emit: Callable[[FileState], None] | None = None,
    ) -> None:
        self.client = client
        self.states = states
        self.options = options
        self.previous = previous or {}
        self.ledger = ledger
        self.display = display
        self.emit = emit
        self.stop = threading.Event()
        self.slots = asyncio.Semaphore(options.concurrency)  # hashing, uploading, resuming
        self.queue: asyncio.Queue[FileState] = asyncio.Queue()
        self._writes: set[asyncio.Future[None]] = set()
        self._starting: dict[asyncio.Task[None], FileState] = {}
        self._pool: list[asyncio.Task[None]] = []
        self.interrupted = False
        self.results = None if options.results is None else Results(client, options, self.previous.values())
        #: Uploads by hash, many per request; None: one request per file (``--no-batch-hashes``).
        self.hashes = HashBatcher(client) if options.batch_hashes else None
        for state in states:
            display.status(None, state.status)

    # ---- the whole batch ------------------------------------------------------------------------

    async def run(self) -> None:
        """Every file to its end; raises :class:`Interrupted` after :meth:`interrupt`."""
        try:
            adopted = await reconcile(self.client, self.previous, self.options.processor, self.options.params)
            for state in adopted:
                await self._record("adopted", state)
            async with asyncio.TaskGroup() as group:
                count = waiters(self.options.concurrency) if self.options.wait else 0
                self._pool = [group.create_task(self._waiter()) for _ in range(count)]
                for state in self.states:
                    await self.slots.acquire()
                    if self.interrupted:
                        break
                    task = group.create_task(self._start(state))
                    self._starting[task] = state
                    task.add_done_callback(self._starting.pop)
                while self._starting:
                    await asyncio.wait(list(self._starting))
                if not self.interrupted:
                    await self.queue.join()
                for task in self._pool:
                    task.cancel()
        finally:
            self.stop.set()
            if self.hashes is not None:
                self.hashes.close()
            if self._writes:  # records on their way reach the disk before the ledger closes
                await asyncio.wait(set(self._writes))
        if self.interrupted:
            raise Interrupted

    def interrupt(self) -> bool:
        """Ctrl-C: start nothing new and stop waiting, but let uploads already on their way get
        their answer (for :data:`GRACE` s at most), so that no job is left unrecorded. False when
        it was already called: the caller then stops at once."""
        if self.interrupted:
            return False
        self.interrupted = True
        for task in self._pool:
            task.cancel()
        for task, state in list(self._starting.items()):
            if state.status != "uploading":
                task.cancel()
        asyncio.get_running_loop().call_later(GRACE, self._stop_uploads)
        return True

    def _stop_uploads(self) -> None:
        for task in list(self._starting):
            task.cancel()

    async def _record(self, event: str, state: FileState) -> None:
        """Append a record (fsync'd in a worker thread). A Ctrl-C while it is on its way does not
        stop it: :meth:`run` waits for every write before it returns."""
        if self.ledger is not None:
            line = self.ledger.line(event, state)  # taken now: the state moves on meanwhile
            write = asyncio.ensure_future(asyncio.to_thread(self.ledger.write, line))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
            await asyncio.shield(write)

    def _set(self, state: FileState, status: str) -> None:
        self.display.status(state.status, status)
        state.status = status

    def _done(self, state: FileState) -> None:
        self.display.finished()
        if self.emit is not None:
            self.emit(state)

    # ---- prepare and submit -----------------------------------------------------------------------

    async def _start(self, state: FileState) -> None:
        slot = _Slot(self.slots)
        try:
            try:
                await self._prepare(state)
            except OSError as exc:  # gone or unreadable since the folder was listed
                self.display.skip(state.path, state.size)
                return await self._fail(
                    state, "error", error("unreadable", f"{exc.strerror}: {state.relpath}")
                )
            if state.job_id is None:
                await self._submit(state, slot)
            else:
                self.display.skip(state.path, state.size)  # the ledger's job: nothing to upload
                await self._resume(state)
        finally:
            slot.release()

    async def _prepare(self, state: FileState) -> None:
        before = self.previous.get(state.path)
        if before and before.sha256 and (before.size, before.mtime_ns) == (state.size, state.mtime_ns):
            state.sha256 = before.sha256
        else:
            self._set(state, "hashing")
            state.sha256 = await asyncio.to_thread(hash_file, state.path, self.stop)
        options = self.options  # the relative path keeps identical files at two paths two jobs
        state.key = make_key(
            state.sha256,
            state.size,
            options.processor,
            options.params,
            name=state.relpath,
            reuse=options.reuse,
            callback_url=options.callback_url,
        )
        if before is not None and before.key == state.key:  # the same content with the same options
            state.job_id, state.error = before.job_id, before.error
            state.result_path, state.submitted_at = before.result_path, before.submitted_at
            state.upload_url = before.upload_url
            self._set(state, before.status if before.job_id else "pending")

    async def _submit(self, state: FileState, slot: _Slot | None = None) -> None:
        state.job_id, state.error, state.result_path = None, None, None
        state.submitted_at = round(time.time(), 3)
        self._set(state, "uploading")
        await self._record("submit", state)
        if self.interrupted:
            return self._set(state, "pending")  # no upload began: the ledger's intent is harmless
        try:
            by_hash = True
            job = None
            if (
                slot is not None
                and self.hashes is not None
                and state.size
                and state.sha256
                and not state.upload_url
            ):
                answer = await self._batched(state, slot)
                if isinstance(answer, Job):
                    job = answer
                # a 428 asked for the bytes: no second question; a 409 or 429 asks again, alone
                by_hash = not (isinstance(answer, ProblemError) and answer.status == 428)
            if job is None:
                job = await self._upload(state, by_hash=by_hash)
        except ProblemError as exc:
            if exc.status in FATAL_STATUSES:
                raise Fatal(describe_problem(exc), EXIT_FAILED) from None
            if exc.status == 422 and ("errors" in exc.body or "processors" in exc.body):
                raise Fatal(describe_problem(exc), EXIT_USAGE) from None  # bad params, unknown processor
            return await self._fail(state, "rejected", error(f"http_{exc.status}", exc.detail or exc.title))
        except TransportError as exc:
            return await self._fail(state, "error", error("connection", str(exc)))
        except (FilejobsError, OSError) as exc:
            return await self._fail(state, "error", error("upload", str(exc)))
        state.job_id = job.id
        self._set(state, job.status)
        await self._record("accepted", state)
        await self._after_submit(state, job)

    async def _batched(self, state: FileState, slot: _Slot) -> Job | ProblemError | object:
        """Ask for ``state``'s job by hash together with other files (:class:`HashBatcher`),
        without holding an upload slot meanwhile: its job, :data:`~filejobs.cli.by_hash.FALLBACK`
        (the single path, by hash first), the 428 that asks for the bytes, or a 409 or 429 (the
        single path asks again, alone, after Retry-After). Another problem is raised, as the
        single path's would be. The slot is held again before anything is uploaded."""
        assert self.hashes is not None
        assert state.sha256 is not None
        item = ByHash(
            state.sha256,
            state.size,
            Path(state.relpath).name,
            processor=self.options.processor,
            params=self.options.params,
            reuse=self.options.reuse,
            callback_url=self.options.callback_url,
            idempotency_key=state.key,
        )
        await self.hashes.room.acquire()
        slot.release()
        try:
            answer = await self.hashes.submit(item)
        finally:
            await slot.acquire()
        if isinstance(answer, Job):
            self.display.not_sent(state.path, state.size)
            return answer
        if isinstance(answer, ProblemError) and answer.status not in (409, 428, 429):
            self.display.skip(state.path, state.size)
            raise answer
        return answer  # 409 and 429: the single path waits and tries again

    async def _upload(self, state: FileState, *, by_hash: bool = True) -> Job:
        """Send the file; the bytes bar keeps what was sent, and drops from its total what won't be.
        A resumable upload's URL goes into the ledger as soon as it exists, and a re-run resumes it."""

        skipped: list[int] = []

        def began(url: str) -> None:
            state.upload_url = url
            if self.ledger is not None:  # durable before the first byte is sent (one small fsync)
                self.ledger.write(self.ledger.line("upload", state))

        try:
            job = await self.client.submit(
                Path(state.path),
                processor=self.options.processor,
                params=self.options.params,
                filename=Path(state.relpath).name,
                idempotency_key=state.key,
                on_progress=lambda sent: self.display.sent(state.path, sent),
                resumable=self.options.resumable,
                upload_url=state.upload_url,
                on_upload_url=began,
                reuse=self.options.reuse,
                callback_url=self.options.callback_url,
                on_skipped=lambda size: skipped.append(size),
                sha256=state.sha256,
                by_hash=by_hash,
            )
        except BaseException:
            self.display.skip(state.path, state.size)
            raise
        if skipped:
            self.display.not_sent(state.path, state.size)
        else:
            self.display.uploaded(state.path, state.size)
        return job

    async def _fail(self, state: FileState, status: str, error: dict[str, Any]) -> None:
        state.error = error
        self._set(state, status)
        await self._record(status, state)
        self._done(state)

    async def _after_submit(self, state: FileState, job: Job) -> None:
        if self.interrupted:
            return
        if job.terminal:
            await self._finished(state, job)
        elif self.options.wait:
            self.queue.put_nowait(state)
        else:
            self._done(state)

    # ---- resume: a job the ledger knows ------------------------------------------------------------

    async def _resume(self, state: FileState) -> None:
        failed = state.status in ("failed", "cancelled")
        if failed and self.options.retry_failed:
            try:
                job = await self.client.retry(state.job_id or "")
            except FilejobsError as exc:
                return await self._fail(state, "error", error("retry", str(exc)))
            state.error = None
            self._set(state, job.status)
            await self._record("retried", state)
            return await self._after_submit(state, job)
        if state.status == "succeeded" and self.results is not None and not exists(state.result_path):
            self.queue.put_nowait(state)  # a waiter fetches the job (a no-op wait) and its result
        elif state.terminal:
            self._done(state)
        elif self.options.wait:
            self.queue.put_nowait(state)
        else:  # report what the job is doing now, not what the ledger saw last time
            try:
                await self._refresh(state, await self.client.get(state.job_id or ""))
            except ProblemError as exc:
                if exc.status != 404:
                    return await self._fail(state, "error", error(f"http_{exc.status}", exc.detail))
                await self._lost(state)
            except FilejobsError as exc:
                return await self._fail(state, "error", error("connection", str(exc)))
            else:
                self._done(state)

    async def _refresh(self, state: FileState, job: Job) -> None:
        state.error = job.error.model_dump() if job.error else None
        if job.status != state.status:
            self._set(state, job.status)
            await self._record("finished" if job.terminal else "status", state)

    async def _lost(self, state: FileState) -> None:
        """The job is gone from the server (deleted, expired, another server): submit the file again."""
        state.job_id = None
        self._set(state, "pending")
        await self._record("lost", state)
        self.display.to_upload(state.size)
        await self._submit(state)

    # ---- wait and fetch ----------------------------------------------------------------------------

    async def _waiter(self) -> None:
        while True:
            state = await self.queue.get()
            try:
                await self._wait_turn(state)
            finally:
                self.queue.task_done()

    async def _wait_turn(self, state: FileState) -> None:
        assert state.job_id is not None

        def on_update(job: Job) -> None:
            if not job.terminal and job.status != state.status:
                self._set(state, job.status)

        try:
            job = await self.client.wait(state.job_id, timeout=WAIT_SLICE, on_update=on_update)
        except WaitTimeout:
            self.queue.put_nowait(state)  # to the back of the line: every job gets its turn
            return
        except ProblemError as exc:
            if exc.status != 404:
                return await self._fail(state, "error", error(f"http_{exc.status}", exc.detail or exc.title))
            async with self.slots:
                await self._lost(state)
            return
        except FilejobsError as exc:
            return await self._fail(state, "error", error("connection", str(exc)))
        await self._finished(state, job)

    async def _finished(self, state: FileState, job: Job) -> None:
        await self._refresh(state, job)
        if job.status == "succeeded" and self.results is not None and not exists(state.result_path):
            try:
                state.result_path = str(await self.results.fetch(state))
            except (FilejobsError, OSError) as exc:
                return await self._fail(state, "error", error("result", str(exc)))
            await self._record("result", state)
        self._done(state)


class _Slot:
    """A file's hold on one of the batch's upload slots, let go while it waits for a batch."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self.slots = slots
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()

    async def acquire(self) -> None:
        if not self.held:
            await self.slots.acquire()
            self.held = True
