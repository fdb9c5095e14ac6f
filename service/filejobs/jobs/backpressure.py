"""Backpressure: per-key rate limits, and the checks an upload passes before any byte is stored.

- ``429`` + ``Retry-After``: the key's request rate (a token bucket per key in each API process),
  or its number of unfinished (queued or running) jobs;
- ``503`` + ``Retry-After``: the queue is deeper than ``MAX_QUEUE_DEPTH``;
- ``507`` + ``Retry-After``: the data directory's free space minus the announced upload would fall
  below ``MIN_FREE_DISK``.
"""

from __future__ import annotations

import math
import shutil
import threading
import time

from filejobs.db import Database
from filejobs.errors import InsufficientStorage, ServiceUnavailable, TooManyRequests
from filejobs.jobs import repository
from filejobs.settings import Settings


class RateLimiter:
    """A token bucket per scope: ``rate`` requests per second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, scope: str) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(scope, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[scope] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise TooManyRequests(
                    f"Rate limit of {self.rate:g} requests per second for this key exceeded.",
                    headers={"Retry-After": str(max(1, wait))},
                )
            self._buckets[scope] = (tokens - 1.0, now)

    def take(self, scope: str, wanted: int) -> int:
        """Up to ``wanted`` more requests' worth of ``scope``'s tokens, without raising: how many
        it got (the items of a batch past them are answered 429 one by one)."""
        if self.rate <= 0 or wanted <= 0:
            return max(0, wanted)
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(scope, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            granted = min(wanted, int(tokens))
            self._buckets[scope] = (tokens - granted, now)
        return granted

    def retry_after(self, scope: str) -> int:
        """Seconds until ``scope`` has a whole token again (at least 1)."""
        with self._lock:
            tokens, then = self._buckets.get(scope, (float(self.burst), time.monotonic()))
        tokens = min(float(self.burst), tokens + (time.monotonic() - then) * self.rate)
        return max(1, math.ceil((1.0 - tokens) / self.rate)) if self.rate > 0 else 1


class Admission:
    """May a new job be made now? Each check runs before the body is read.

    The readings behind the checks (free disk, queue depth, a caller's unfinished jobs) are reused
    for up to :data:`TTL` seconds and adjusted for what this process admitted since, so a burst of
    uploads far from the limits costs one ``statvfs`` and two COUNTs per second, not per upload,
    and the checks run on the event loop without a thread. Near a limit (the last 5 %) the counts
    are taken exactly on every upload. ``*_cached`` return None when they cannot decide.
    """

    #: Seconds a reading is reused.
    TTL = 1.0

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._lock = threading.Lock()
        self._free: tuple[int, float] = (0, float("-inf"))  # bytes free (less admitted since), when
        self._depth: tuple[int, float] = (0, float("-inf"))
        self._unfinished: dict[str, tuple[int, float]] = {}

    def _fresh(self, reading: tuple[int, float]) -> int | None:
        value, at = reading
        return value if time.monotonic() - at < self.TTL else None

    # ---- disk -----------------------------------------------------------------------------------

    def check_disk_cached(self, content_length: int | None) -> bool | None:
        """:meth:`check_disk` from a fresh reading (True: passed), or None when it is stale."""
        with self._lock:
            free = self._fresh(self._free)
            if free is None:
                return None
            self._check_free(free, content_length)
            self._free = (free - max(0, content_length or 0), self._free[1])
        return True

    def check_disk(self, content_length: int | None) -> None:
        free = shutil.disk_usage(self.settings.data_dir).free
        with self._lock:
            self._check_free(free, content_length)
            self._free = (free - max(0, content_length or 0), time.monotonic())

    def _check_free(self, free: int, content_length: int | None) -> None:
        need = self.settings.min_free_disk + max(0, content_length or 0)
        if free < need:
            raise InsufficientStorage(
                "Not enough free disk space for this upload now; try again later.",
                headers={"Retry-After": "60"},
            )

    # ---- queue depth and unfinished jobs -------------------------------------------------------

    def queue_depth(self) -> int:
        depth = repository.count_queued(self.db)
        with self._lock:
            self._depth = (depth, time.monotonic())
        return depth

    def check_new_job_cached(self, owner: str) -> bool | None:
        """:meth:`check_new_job` from fresh readings (True: passed), or None when one is stale."""
        with self._lock:
            depth = self._fresh(self._depth) if self.settings.max_queue_depth else 0
            unfinished = (
                self._fresh(self._unfinished.get(owner, (0, float("-inf"))))
                if self.settings.max_unfinished_jobs
                else 0
            )
        if depth is None or unfinished is None:
            return None
        if _near(depth, self.settings.max_queue_depth) or _near(
            unfinished, self.settings.max_unfinished_jobs
        ):
            return None  # close to a limit: count exactly
        self._check(depth, unfinished)
        self._admitted(owner)
        return True

    def check_new_job(self, owner: str) -> None:
        """Raise 503 (queue too deep) or 429 (too many unfinished jobs for this caller)."""
        depth = self.queue_depth() if self.settings.max_queue_depth else 0
        unfinished = 0
        if self.settings.max_unfinished_jobs:
            unfinished = repository.count_unfinished(self.db, owner)
            with self._lock:
                self._unfinished[owner] = (unfinished, time.monotonic())
                if len(self._unfinished) > 10_000:  # many keys: forget the stale readings
                    self._unfinished = {
                        k: v for k, v in self._unfinished.items() if self._fresh(v) is not None
                    }
        self._check(depth, unfinished)
        self._admitted(owner)

    def _admitted(self, owner: str) -> None:
        """Count a job about to be made into the readings (an upload that fails overcounts a little
        for at most :data:`TTL` seconds)."""
        with self._lock:
            value, at = self._depth
            self._depth = (value + 1, at)
            if owner in self._unfinished:
                value, at = self._unfinished[owner]
                self._unfinished[owner] = (value + 1, at)

    def _check(self, depth: int, unfinished: int) -> None:
        limit = self.settings.max_queue_depth
        if limit and depth >= limit:
            raise ServiceUnavailable(
                f"The queue holds {limit} or more jobs; try again later.", headers={"Retry-After": "10"}
            )
        most = self.settings.max_unfinished_jobs
        if most and unfinished >= most:
            raise TooManyRequests(
                f"This key has {most} or more unfinished jobs; wait for some to finish.",
                headers={"Retry-After": "5"},
            )


def _near(value: int, limit: int) -> bool:
    """Within the last 5 % (at least 1) of a limit (0: no limit)."""
    return bool(limit) and value >= limit - max(1, limit // 20)
