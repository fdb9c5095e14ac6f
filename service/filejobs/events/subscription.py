"""What one event stream waits on: the changes of the jobs it may see, merged and paced.

A job's changes queue in order, but one that only moves progress replaces the queued change of
the same status (latest state wins), and one of the same status as the last one sent waits out
``throttle`` seconds after it. A status change is therefore never hidden by a later progress
change, and a busy job costs a stream at most one event per ``throttle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace

from filejobs.models import Job

#: Job versions a stream remembers (to drop a change it has already queued or sent).
REMEMBERED = 10_000


@dataclass(frozen=True)
class Deleted:
    """A job that is gone. ``owner`` is None when the feed never saw the row (only a stream that
    asked for this very job, and was allowed to see it, hears of it then)."""

    id: str
    owner: str | None


#: A row (a model or a plain view of one) or a deletion.
Change = SimpleNamespace | Job | Deleted


class Subscription:
    def __init__(self, *, owner: str, job_id: str | None = None, throttle: float = 0.0) -> None:
        self.owner = owner
        self.job_id = job_id
        self.throttle = throttle
        self._queue: dict[str, list[Change]] = {}
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()  # deletions queued or sent
        self._sent: OrderedDict[str, tuple[float, str]] = OrderedDict()  # id: (when, status)
        self._wake = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        """End the stream: :meth:`changes` returns nothing from now on (the server is stopping, or
        the key was revoked)."""
        self.closed = True
        self._wake.set()

    def wants(self, owner: str | None, job_id: str) -> bool:
        if self.job_id is not None:
            return job_id == self.job_id and owner in (None, self.owner)
        return owner == self.owner

    def push(self, change: Change) -> None:
        """Queue ``change`` unless it is no newer than one already queued or sent (on the loop)."""
        job_id = change.id
        if isinstance(change, Deleted):
            if job_id in self._gone:
                return  # heard of twice (say, from this process and from NOTIFY)
            self._gone[job_id] = None
            if len(self._gone) > REMEMBERED:
                self._gone.popitem(last=False)
            self._queue[job_id] = [change]
            self._versions.pop(job_id, None)
            self._wake.set()
            return
        version: int = change.version
        if version <= self._versions.get(job_id, 0):
            return
        self._versions[job_id] = version
        self._versions.move_to_end(job_id)
        if len(self._versions) > REMEMBERED:
            self._versions.popitem(last=False)
        queued = self._queue.setdefault(job_id, [])
        last = queued[-1] if queued else None
        if isinstance(last, Deleted):
            return  # ids are never reused: nothing follows a deletion
        if last is not None and last.status == change.status:
            queued[-1] = change
        else:
            queued.append(change)
        self._wake.set()

    def mark_sent(self, version: int, job_id: str) -> None:
        """Treat ``version`` of ``job_id`` as delivered already (a resumed stream's Last-Event-ID)."""
        if version > self._versions.get(job_id, 0):
            self._versions[job_id] = version

    async def changes(self, wait: float) -> list[Change]:
        """The changes due now, waiting up to ``wait`` seconds for one; ``[]`` if none came."""
        deadline = time.monotonic() + wait
        while not self.closed:
            now = time.monotonic()
            ready, due = self._take_ready(now)
            if ready:
                return ready
            if now >= deadline:
                return []
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(deadline, due) - now)
        return []

    def _take_ready(self, now: float) -> tuple[list[Change], float]:
        """Pop the first queued change of every job that may be sent now; also return when the
        next held-back one falls due."""
        sent = self._sent
        while sent and next(iter(sent.values()))[0] <= now - self.throttle:
            sent.popitem(last=False)  # older than the throttle: no longer holds anything back
        ready: list[Change] = []
        due = math.inf
        for job_id in list(self._queue):
            queued = self._queue[job_id]
            head = queued[0]
            if not isinstance(head, Deleted):
                last = sent.get(job_id)
                if last is not None and last[1] == head.status:
                    due = min(due, last[0] + self.throttle)
                    continue
            queued.pop(0)
            if not queued:
                del self._queue[job_id]
            ready.append(head)
            if isinstance(head, Deleted):
                sent.pop(job_id, None)
            else:
                sent[job_id] = (now, head.status)
                sent.move_to_end(job_id)
        return ready, due
