"""The synchronous client, on :class:`httpx.Client`."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import httpx

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
BodyFactory = Callable[[int], Iterator[bytes]]


class Client:
    """A filejobs client. Thread-safe; use it as a context manager or call :meth:`close`.

    ``base_url`` and ``api_key`` default to ``FILEJOBS_URL`` and ``FILEJOBS_API_KEY`` (see
    :class:`ClientSettings`). Requests are retried up to ``retries`` times on connection failures,
    ``429`` and ``503`` (see :mod:`filejobs.client._retry`); other errors raise a
    :class:`~filejobs.client.errors.FilejobsError`. ``on_retry`` is called with a
    :class:`~filejobs.client._retry.Retrying` before each retry's wait.
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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(
            base_url=url, headers=api.default_headers(key), timeout=timeout, transport=transport
        )

    # ---- plumbing ---------------------------------------------------------------------------

    def _send(
        self, call: Call, body: BodyFactory | None = None, *, stream: bool = False, retries: int | None = None
    ) -> httpx.Response:
        """Send ``call``, retrying per :attr:`policy`. The body is read unless ``stream`` (an error
        answer's body is always read); a streamed response must be closed by the caller."""
        attempts = Attempts(self.policy, safe=call.safe, retries=retries)
        while True:
            request = api.build_request(self._http, call, body(attempts.retried) if body else None)
            try:
                response = self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                time.sleep(attempts.after_error(exc, request))
                continue
            try:
                if not stream or response.status_code >= 400:
                    response.read()
            except httpx.HTTPError as exc:
                response.close()
                time.sleep(attempts.after_error(exc, request))
                continue
            delay = attempts.after_response(response)
            if delay is None:
                return response
            response.close()
            time.sleep(delay)

    @staticmethod
    def _chunks(upload: Upload, source: BinaryIO, on_progress: ProgressCallback | None) -> Iterator[bytes]:
        reader = ChunkReader(source, upload.size)
        yield upload.framing.head
        while chunk := reader.read():
            yield chunk
            if on_progress is not None:
                on_progress(reader.sent)  # the chunk was handed to the socket
        yield upload.framing.tail

    # ---- jobs -------------------------------------------------------------------------------

    def submit(
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
        """Upload ``file`` (a path, or a binary file object read from its position) as a new job.

        ``by_hash``: first ask by the content's SHA-256 (one small request): when the server holds
        this content for the key, the job is made without sending a byte (``on_skipped(size)`` is
        told), else the file is sent (``sha256``: a path's hash when the caller has it).
        ``reuse=False`` asks for a fresh run even where a kept result of the same file, processor
        and params could be reused. ``callback_url``: the job's final status is sent there, signed
        with the key's default secret (``POST /v1/callback-secret``).

        ``resumable``: ``"auto"`` sends a file of at least ``resumable_threshold`` bytes (64 MiB)
        with tus in ``chunk_size`` chunks, resuming from the server's offset after a failure;
        ``"always"``/``"never"`` force the choice. ``upload_url`` resumes an upload begun before
        (``on_upload_url(url)`` is told the URL of each upload this call begins: keep it).

        The file streams from disk in 1 MiB chunks; ``on_progress(bytes_sent)`` follows it (and
        is called with ``0`` when a retry starts the upload again). The ``Idempotency-Key`` is
        ``idempotency_key`` or one derived from the content and options, so a repeated submit of
        the same file is recognisable. A file object that cannot seek is sent once, without retries.
        """
        upload = prepare_upload(
            file,
            processor=processor,
            params=params,
            filename=filename,
            key=idempotency_key,
            reuse=reuse,
            sha256=sha256,
            callback_url=callback_url,
        )
        if by_hash and upload.sha256 is not None and upload.size and upload_url is None:
            found = self._submit_by_hash(upload)
            if found is not None:
                if on_skipped is not None:
                    on_skipped(upload.size)
                return found
        if tus.wanted(resumable, upload, self.resumable_threshold):
            return self._submit_resumable(upload, processor, params, on_progress, upload_url, on_upload_url)
        source = upload.open()
        try:

            def body(retry: int) -> Iterator[bytes]:
                upload.rewind(source)
                if retry and on_progress is not None:
                    on_progress(0)
                return self._chunks(upload, source, on_progress)

            response = self._send(api.submit_call(upload), body, retries=None if upload.rewindable else 0)
        finally:
            upload.close(source)
        return api.parse_job(response)

    def submit_many_by_hash(self, files: Sequence[ByHash]) -> list[Job | ProblemError]:
        """Make a job of each file the server holds already for this key, many per request
        (``POST /v1/jobs/by-hash``, up to 100 a request): the job of each, in order, or the
        :class:`ProblemError` its single submit would have raised; a ``428`` one
        (``status == 428``) asks for the bytes: send that file with :meth:`submit`.

        A request that fails as a whole raises (a server without the endpoint: 404 or 405). It is
        sent again after a dropped connection only when every item has an ``idempotency_key``."""
        answers: list[Job | ProblemError] = []
        for call, content, count in api.by_hash_batches(list(files)):

            def body(retry: int, content: bytes = content) -> Iterator[bytes]:
                return iter([content])

            answers.extend(api.parse_by_hash(self._send(call, body), count))
        return answers

    def _submit_by_hash(self, upload: Upload) -> Job | None:
        """The job made from content the server holds (None: it asks for the bytes)."""
        call, body = api.by_hash_call(upload)
        try:
            return api.parse_job(self._send(call, lambda retry: iter([body])))
        except ProblemError as exc:
            if api.send_the_bytes(exc):
                return None
            raise

    def _submit_resumable(
        self,
        upload: Upload,
        processor: str | None,
        params: dict[str, Any] | None,
        on_progress: ProgressCallback | None,
        upload_url: str | None,
        on_upload_url: tus.UploadUrlCallback | None,
    ) -> Job:
        source = upload.open()
        try:
            progress = self._tus_state(upload_url) if upload_url else None
            if progress is None:
                progress = tus.parse_created(self._send(tus.create_call(upload, processor, params)))
                if on_upload_url is not None:
                    on_upload_url(progress.url)
            failures = 0
            while progress.job_id is None:
                size = tus.chunk_size_at(upload, progress.offset, self.chunk_size)
                chunk = tus.read_chunk(upload, source, progress.offset, size, on_progress)
                try:
                    response = self._send(
                        tus.patch_call(progress.url, progress.offset, size),
                        tus.sent_once(chunk),
                        retries=0,
                    )
                    progress = tus.parse_progress(progress.url, response)
                    failures = 0
                except (TransportError, ProblemError) as exc:
                    if isinstance(exc, ProblemError) and not tus.resumable_problem(exc):
                        raise
                    if failures >= self.policy.retries:
                        raise
                    time.sleep(self.policy.delay(failures, getattr(exc, "retry_after", None)))
                    failures += 1
                    found = self._tus_state(progress.url)
                    if found is None:
                        raise UploadError(
                            "the upload was removed from the server; submit the file again"
                        ) from exc
                    progress = found
        finally:
            upload.close(source)
        return self.get(progress.job_id)

    def _tus_state(self, url: str) -> tus.Progress | None:
        """The server's offset of an upload (None when it is gone: terminated or expired)."""
        try:
            return tus.parse_progress(url, self._send(tus.head_call(url)))
        except ProblemError as exc:
            if tus.is_gone(exc):
                return None
            raise

    def get(self, job_id: str) -> Job:
        return api.parse_job(self._send(api.get_call(job_id)))

    def wait(
        self, job_id: str, *, timeout: float | None = None, on_update: Callable[[Job], None] | None = None
    ) -> Job:
        """Block until the job is succeeded, failed or cancelled, and return it.

        Long-polls (``?wait=30`` with ``If-None-Match``); ``on_update(job)`` sees every change.
        Raises :class:`~filejobs.client.errors.WaitTimeout` after ``timeout`` seconds (``None``: never).
        """
        waiter = Waiter(job_id, timeout)
        while True:
            job = waiter.update(self._send(waiter.next_call()))
            if job is not None and on_update is not None:
                on_update(job)
            if waiter.done:
                return waiter.result()
            time.sleep(waiter.pause())

    def list_page(
        self,
        *,
        status: str | None = None,
        processor: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobList:
        """One page of jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""
        call = api.list_call(status=status, processor=processor, limit=limit, cursor=cursor)
        return api.parse_page(self._send(call))

    def list(
        self, *, status: str | None = None, processor: str | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Every job (optionally of one status and/or processor), newest first, page by page."""
        cursor: str | None = None
        while True:
            page = self.list_page(status=status, processor=processor, limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def result(
        self, job_id: str, *, to: str | os.PathLike[str] | BinaryIO | None = None
    ) -> dict[str, Any] | Path | None:
        """The result of a succeeded job (``Conflict`` before that).

        A JSON result is returned as a dict (``to`` is not used). A file result is streamed to
        ``to``: a file object (returns ``None``), a file path (written atomically; returns it) or a
        directory (the server's file name, made safe, inside it; returns the path). With ``to``
        left ``None``, a file result goes into the current directory.
        """
        response = self._send(api.result_call(job_id), stream=True)
        try:
            api.check(response)
            if not api.is_file_result(response):
                response.read()
                return api.parse_json_result(response)
            if to is not None and not isinstance(to, str | os.PathLike):
                for chunk in response.iter_bytes():
                    to.write(chunk)
                return None
            out = AtomicFile(resolve_target(to, response.headers.get("Content-Disposition"), job_id))
            try:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                return out.commit()
            except BaseException:
                out.abort()
                raise
        except httpx.HTTPError as exc:
            raise TransportError(f"downloading the result of job {job_id} failed: {exc}") from exc
        finally:
            response.close()

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (``Conflict`` when it already finished)."""
        return api.parse_job(self._send(api.cancel_call(job_id)))

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again with a fresh attempt budget (``Conflict`` otherwise)."""
        return api.parse_job(self._send(api.retry_call(job_id)))

    def delete(self, job_id: str) -> None:
        """Delete a job and its files, cancelling it first if needed."""
        api.check(self._send(api.delete_call(job_id)))

    def processors(self) -> builtins.list[ProcessorInfo]:
        """The processors the server offers."""
        return api.parse_processors(self._send(api.processors_call()))

    # ---- webhooks -----------------------------------------------------------------------------

    def webhooks(self) -> builtins.list[Webhook]:
        """The key's webhook endpoints (secrets masked)."""
        return api.parse_webhooks(self._send(api.webhooks_call()))

    def add_webhook(
        self, url: str, *, events: builtins.list[str] | None = None, description: str = ""
    ) -> Webhook:
        """Register an endpoint (``events`` default to every job event); its secret is in the
        answer, and only there."""
        body = api.webhook_body(url, events, description)
        return api.parse_webhook(self._send(api.add_webhook_call(), lambda _retry: iter([body])))

    def remove_webhook(self, webhook_id: str) -> None:
        api.expect_status(self._send(api.remove_webhook_call(webhook_id)), 204)

    def rotate_webhook_secret(self, webhook_id: str) -> Webhook:
        """A new secret (whole in the answer); the old one signs too for the server's grace period."""
        return api.parse_webhook(self._send(api.rotate_webhook_call(webhook_id)))

    def rotate_default_secret(self) -> SigningSecret:
        """Make or rotate the key's default secret, which signs its jobs' ``callback_url`` deliveries."""
        return api.parse_secret(self._send(api.rotate_default_secret_call()))

    # ---- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
