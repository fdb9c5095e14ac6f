"""The asynchronous client, on :class:`httpx.AsyncClient` (asyncio or trio, through anyio).

The same calls as :class:`~filejobs.client.sync.Client`, from the same shared pieces; every file
operation (hashing, reading the upload, writing a result) runs in a worker thread, so the event
loop is never blocked by the disk.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import anyio
import httpx
from anyio import to_thread

from filejobs.client import _common as api
from filejobs.client import _tus as tus
from filejobs.client._common import ByHash, Call
from filejobs.client._files import AtomicFile, resolve_target
from filejobs.client._retry import Attempts, Retrying, RetryPolicy
from filejobs.client._upload import ChunkReader, FileArg, Upload, prepare_upload
from filejobs.client._wait import Waiter
from filejobs.client.errors import ProblemError, TransportError, UploadError
from filejobs.client.models import Job, JobList, ProcessorInfo, SigningSecret, Webhook
from filejobs.client.settings import ClientSettings, resolve

ProgressCallback = Callable[[int], None]
BodyFactory = Callable[[int], AsyncIterator[bytes]]


class AsyncClient:
    """The asynchronous filejobs client; see :class:`~filejobs.client.sync.Client` for the calls.

    Use it as ``async with AsyncClient(...) as client:`` or ``await client.aclose()``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        settings: ClientSettings | None = None,
        on_retry: Callable[[Retrying], None] | None = None,
        resumable_threshold: int = tus.DEFAULT_THRESHOLD,
        chunk_size: int = tus.DEFAULT_CHUNK,
    ) -> None:
        url, key = resolve(base_url, api_key, settings)
        self.resumable_threshold = resumable_threshold
        self.chunk_size = chunk_size
        self.base_url = url
        self.policy = RetryPolicy(
            retries=retries, backoff=backoff, backoff_max=backoff_max, on_retry=on_retry
        )
        self._http = httpx.AsyncClient(
            base_url=url, headers=api.default_headers(key), timeout=timeout, transport=transport
        )

    # ---- plumbing ---------------------------------------------------------------------------

    async def _send(
        self, call: Call, body: BodyFactory | None = None, *, stream: bool = False, retries: int | None = None
    ) -> httpx.Response:
        """See :meth:`filejobs.client.sync.Client._send`."""
        attempts = Attempts(self.policy, safe=call.safe, retries=retries)
        while True:
            request = api.build_request(self._http, call, body(attempts.retried) if body else None)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                await anyio.sleep(attempts.after_error(exc, request))
                continue
            try:
                if not stream or response.status_code >= 400:
                    await response.aread()
            except httpx.HTTPError as exc:
                await response.aclose()
                await anyio.sleep(attempts.after_error(exc, request))
                continue
            delay = attempts.after_response(response)
            if delay is None:
                return response
            await response.aclose()
            await anyio.sleep(delay)

    @staticmethod
    async def _chunks(
        upload: Upload, source: BinaryIO, on_progress: ProgressCallback | None, *, restart: bool
    ) -> AsyncIterator[bytes]:
        await to_thread.run_sync(upload.rewind, source)
        if restart and on_progress is not None:
            on_progress(0)
        reader = ChunkReader(source, upload.size)
        yield upload.framing.head
        while chunk := await to_thread.run_sync(reader.read):
            yield chunk
            if on_progress is not None:
                on_progress(reader.sent)
        yield upload.framing.tail

    # ---- jobs -------------------------------------------------------------------------------

    async def submit(
        self,
        file: FileArg,
        *,
        processor: str | None = None,
        params: dict[str, Any] | None = None,
        filename: str | None = None,
        idempotency_key: str | None = None,
        on_progress: ProgressCallback | None = None,
        resumable: tus.Resumable = "auto",
        upload_url: str | None = None,
        on_upload_url: tus.UploadUrlCallback | None = None,
        reuse: bool = True,
        by_hash: bool = True,
        on_skipped: Callable[[int], None] | None = None,
        sha256: str | None = None,
        callback_url: str | None = None,
    ) -> Job:
        """See :meth:`filejobs.client.sync.Client.submit`; ``on_progress``, ``on_upload_url`` and
        ``on_skipped`` run on the event loop."""
        upload = await to_thread.run_sync(
            partial(
                prepare_upload,
                file,
                processor=processor,
                params=params,
                filename=filename,
                key=idempotency_key,
                reuse=reuse,
                sha256=sha256,
                callback_url=callback_url,
            )
        )
        if by_hash and upload.sha256 is not None and upload.size and upload_url is None:
            found = await self._submit_by_hash(upload)
            if found is not None:
                if on_skipped is not None:
                    on_skipped(upload.size)
                return found
        if tus.wanted(resumable, upload, self.resumable_threshold):
            return await self._submit_resumable(
                upload, processor, params, on_progress, upload_url, on_upload_url
            )
        source = await to_thread.run_sync(upload.open)
        try:

            def body(retry: int) -> AsyncIterator[bytes]:
                return self._chunks(upload, source, on_progress, restart=retry > 0)

            response = await self._send(
                api.submit_call(upload), body, retries=None if upload.rewindable else 0
            )
        finally:
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(upload.close, source)
        return api.parse_job(response)

    async def submit_many_by_hash(self, files: Sequence[ByHash]) -> list[Job | ProblemError]:
        """See :meth:`filejobs.client.sync.Client.submit_many_by_hash`."""
        answers: list[Job | ProblemError] = []
        for call, content, count in api.by_hash_batches(list(files)):

            async def body(retry: int, content: bytes = content) -> AsyncIterator[bytes]:
                yield content

            answers.extend(api.parse_by_hash(await self._send(call, body), count))
        return answers

    async def _submit_by_hash(self, upload: Upload) -> Job | None:
        """See :meth:`filejobs.client.sync.Client._submit_by_hash`."""
        call, content = api.by_hash_call(upload)

        async def body(retry: int) -> AsyncIterator[bytes]:
            yield content

        try:
            return api.parse_job(await self._send(call, body))
        except ProblemError as exc:
            if api.send_the_bytes(exc):
                return None
            raise

    async def _submit_resumable(
        self,
        upload: Upload,
        processor: str | None,
        params: dict[str, Any] | None,
        on_progress: ProgressCallback | None,
        upload_url: str | None,
        on_upload_url: tus.UploadUrlCallback | None,
    ) -> Job:
        """See :meth:`filejobs.client.sync.Client._submit_resumable`."""
        source = await to_thread.run_sync(upload.open)
        try:
            progress = await self._tus_state(upload_url) if upload_url else None
            if progress is None:
                progress = tus.parse_created(await self._send(tus.create_call(upload, processor, params)))
                if on_upload_url is not None:
                    on_upload_url(progress.url)
            failures = 0
            while progress.job_id is None:
                size = tus.chunk_size_at(upload, progress.offset, self.chunk_size)
                pieces = tus.read_chunk(upload, source, progress.offset, size, on_progress)
                try:
                    response = await self._send(
                        tus.patch_call(progress.url, progress.offset, size),
                        tus.sent_once(_in_thread(pieces)),
                        retries=0,
                    )
                    progress = tus.parse_progress(progress.url, response)
                    failures = 0
                except (TransportError, ProblemError) as exc:
                    if isinstance(exc, ProblemError) and not tus.resumable_problem(exc):
                        raise
                    if failures >= self.policy.retries:
                        raise
                    await anyio.sleep(self.policy.delay(failures, getattr(exc, "retry_after", None)))
                    failures += 1
                    found = await self._tus_state(progress.url)
                    if found is None:
                        raise UploadError(
                            "the upload was removed from the server; submit the file again"
                        ) from exc
                    progress = found
        finally:
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(upload.close, source)
        return await self.get(progress.job_id)

    async def _tus_state(self, url: str) -> tus.Progress | None:
        try:
            return tus.parse_progress(url, await self._send(tus.head_call(url)))
        except ProblemError as exc:
            if tus.is_gone(exc):
                return None
            raise

    async def get(self, job_id: str) -> Job:
        return api.parse_job(await self._send(api.get_call(job_id)))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the sync client's signature; a deadline, not a scope
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """See :meth:`filejobs.client.sync.Client.wait`."""
        waiter = Waiter(job_id, timeout)
        while True:
            job = waiter.update(await self._send(waiter.next_call()))
            if job is not None and on_update is not None:
                on_update(job)
            if waiter.done:
                return waiter.result()
            await anyio.sleep(waiter.pause())

    async def list_page(
        self,
        *,
        status: str | None = None,
        processor: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobList:
        call = api.list_call(status=status, processor=processor, limit=limit, cursor=cursor)
        return api.parse_page(await self._send(call))

    async def list(
        self, *, status: str | None = None, processor: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Job]:
        """Every job, newest first: ``async for job in client.list(): ...``."""
        cursor: str | None = None
        while True:
            page = await self.list_page(status=status, processor=processor, limit=page_size, cursor=cursor)
            for job in page.items:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def result(
        self, job_id: str, *, to: str | os.PathLike[str] | BinaryIO | None = None
    ) -> dict[str, Any] | Path | None:
        """See :meth:`filejobs.client.sync.Client.result`."""
        response = await self._send(api.result_call(job_id), stream=True)
        try:
            api.check(response)
            if not api.is_file_result(response):
                await response.aread()
                return api.parse_json_result(response)
            if to is not None and not isinstance(to, str | os.PathLike):
                async for chunk in response.aiter_bytes():
                    await to_thread.run_sync(to.write, chunk)
                return None
            target = partial(resolve_target, to, response.headers.get("Content-Disposition"), job_id)
            out = await to_thread.run_sync(lambda: AtomicFile(target()))
            try:
                async for chunk in response.aiter_bytes():
                    await to_thread.run_sync(out.write, chunk)
                return await to_thread.run_sync(out.commit)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await to_thread.run_sync(out.abort)
                raise
        except httpx.HTTPError as exc:
            raise TransportError(f"downloading the result of job {job_id} failed: {exc}") from exc
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    async def cancel(self, job_id: str) -> Job:
        return api.parse_job(await self._send(api.cancel_call(job_id)))

    async def retry(self, job_id: str) -> Job:
        return api.parse_job(await self._send(api.retry_call(job_id)))

    async def delete(self, job_id: str) -> None:
        api.check(await self._send(api.delete_call(job_id)))

    async def processors(self) -> builtins.list[ProcessorInfo]:
        return api.parse_processors(await self._send(api.processors_call()))

    # ---- lifecycle ----------------------------------------------------------------------------

    # ---- webhooks -----------------------------------------------------------------------------

    async def webhooks(self) -> builtins.list[Webhook]:
        """See :meth:`filejobs.client.sync.Client.webhooks`."""
        return api.parse_webhooks(await self._send(api.webhooks_call()))

    async def add_webhook(
        self, url: str, *, events: builtins.list[str] | None = None, description: str = ""
    ) -> Webhook:
        """See :meth:`filejobs.client.sync.Client.add_webhook`."""
        body = api.webhook_body(url, events, description)

        async def once(_retry: int) -> AsyncIterator[bytes]:
            yield body

        return api.parse_webhook(await self._send(api.add_webhook_call(), once))

    async def remove_webhook(self, webhook_id: str) -> None:
        api.expect_status(await self._send(api.remove_webhook_call(webhook_id)), 204)

    async def rotate_webhook_secret(self, webhook_id: str) -> Webhook:
        return api.parse_webhook(await self._send(api.rotate_webhook_call(webhook_id)))

    async def rotate_default_secret(self) -> SigningSecret:
        return api.parse_secret(await self._send(api.rotate_default_secret_call()))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def _in_thread(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator (file reads) as an async one, each step in a worker thread."""
    while (piece := await to_thread.run_sync(next, pieces, None)) is not None:
        yield piece
