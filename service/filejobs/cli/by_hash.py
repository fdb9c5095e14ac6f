"""Uploads by hash of a batch, many per request (``POST /v1/jobs/by-hash``).

A re-run of ``filejobs submit`` over a folder the server has seen is one upload by hash per file;
sent one request each, the requests are most of its time (client and server work per request,
not per job). :class:`HashBatcher` gathers the files whose hashes are known into requests of up
to 100 items, as a group commit does: a request leaves as soon as fewer than
:data:`IN_FLIGHT` are on their way (the first file is not kept waiting), and the files hashed
meanwhile go together in the next one. Each file gets its own answer: its job, or the problem a
single submit would have had (``428``: send the bytes).

A server without the endpoint (``404``/``405``), or a request that fails as a whole, sends its
files back to the single path (:data:`FALLBACK`): they are submitted one by one, as before.
"""

from __future__ import annotations

import asyncio
from typing import Final

from filejobs.client import AsyncClient, ByHash, FilejobsError, Job, ProblemError

#: Batch requests on their way at once.
IN_FLIGHT = 2
#: Items one request carries (the server's limit).
MAX_ITEMS = 100
#: Files waiting for a batch at most (a file waits without holding an upload slot).
ROOM = 2 * MAX_ITEMS


class _Fallback:
    """This file goes the single way (one ``POST /v1/jobs``, by hash then by bytes)."""


FALLBACK: Final = _Fallback()
Answer = Job | ProblemError | _Fallback


class HashBatcher:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.room = asyncio.Semaphore(ROOM)
        self.disabled = False
        self._pending: list[tuple[ByHash, asyncio.Future[Answer]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: ByHash) -> Answer:
        """``item``'s answer; call with :attr:`room` acquired (it is released here)."""
        try:
            if self.disabled:
                return FALLBACK
            future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            self._pending.append((item, future))
            self._flush()
            return await future
        finally:
            self.room.release()

    def _flush(self) -> None:
        while self._pending and (len(self._pending) >= MAX_ITEMS or self._in_flight < IN_FLIGHT):
            batch, self._pending = self._pending[:MAX_ITEMS], self._pending[MAX_ITEMS:]
            self._in_flight += 1
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[ByHash, asyncio.Future[Answer]]]) -> None:
        answers: list[Answer]
        try:
            answers = list(await self.client.submit_many_by_hash([item for item, _ in batch]))
        except ProblemError as exc:
            if exc.status in (404, 405):  # a server that does not know it: never ask again
                self.disabled = True
            answers = [FALLBACK] * len(batch)
        except (FilejobsError, ValueError):  # the single path retries, and reports, per file
            answers = [FALLBACK] * len(batch)
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.set_result(FALLBACK)
            raise
        finally:
            self._in_flight -= 1
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():  # its file's task may have been cancelled (Ctrl-C)
                future.set_result(answer)
        self._flush()

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for _, future in self._pending:
            if not future.done():
                future.set_result(FALLBACK)
        self._pending = []
