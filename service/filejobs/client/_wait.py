"""``wait()``'s plan, shared by both clients: one plain ``GET``, then long-polls.

Each long-poll is ``GET /v1/jobs/{id}?wait=≤30`` with ``If-None-Match`` set to the last ``ETag``:
the server answers as soon as the job changes (``200``), or ``304`` when the wait ran out. A poll
that comes back unchanged sooner than :data:`MIN_POLL_INTERVAL` (a server or proxy that ignores
``?wait=``) is followed by a pause, so ``wait()`` never turns into a tight loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from filejobs.client._common import MAX_WAIT, Call, get_call, parse_job
from filejobs.client.errors import WaitTimeout
from filejobs.client.models import Job

MIN_POLL_INTERVAL = 1.0


class Waiter:
    def __init__(
        self, job_id: str, timeout: float | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must not be negative")
        self.job_id = job_id
        self.timeout = timeout
        self.clock = clock
        self.deadline = None if timeout is None else clock() + timeout
        self.job: Job | None = None
        self.etag: str | None = None
        self._sent_at = 0.0
        self._changed = True

    @property
    def done(self) -> bool:
        return self.job is not None and self.job.terminal

    def next_call(self) -> Call:
        """The next request; raises :class:`WaitTimeout` once the deadline has passed."""
        self._sent_at = self.clock()
        if self.job is None:
            return get_call(self.job_id)
        wait = MAX_WAIT
        if self.deadline is not None:
            remaining = self.deadline - self._sent_at
            if remaining <= 0:
                raise WaitTimeout(self.job_id, self.timeout or 0.0, self.job)
            wait = min(wait, remaining)
        return get_call(self.job_id, wait=wait, etag=self.etag)

    def update(self, response: httpx.Response) -> Job | None:
        """Take in an answer; the job when it changed (``None`` for ``304``)."""
        if response.status_code == 304 and self.job is not None:
            self._changed = False
            return None
        job = parse_job(response)
        self._changed = job != self.job
        self.job, self.etag = job, response.headers.get("ETag")
        return job if self._changed else None

    def pause(self) -> float:
        """Seconds to sleep before the next poll: nonzero only after a quick, unchanged answer."""
        if self._changed or self.done:
            return 0.0
        pause = MIN_POLL_INTERVAL - (self.clock() - self._sent_at)
        if self.deadline is not None:
            pause = min(pause, self.deadline - self.clock())
        return max(0.0, pause)

    def result(self) -> Job:
        assert self.job is not None
        return self.job
