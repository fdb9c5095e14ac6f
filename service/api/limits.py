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

from service.db import Database
from service.errors import InsufficientStorage, ServiceUnavailable, TooManyRequests
from service.jobs import repository
from service.settings import Settings


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


class Admission:
    """May a new job be made now? Each check is cheap and runs before the body is read."""

    #: Seconds a queue-depth reading is reused (one COUNT per second however many uploads).
    DEPTH_TTL = 1.0

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._lock = threading.Lock()
        self._depth = 0
        self._depth_at = float("-inf")

    def check_disk(self, content_length: int | None) -> None:
        need = self.settings.min_free_disk + max(0, content_length or 0)
        free = shutil.disk_usage(self.settings.data_dir).free
        if free < need:
            raise InsufficientStorage(
                "Not enough free disk space for this upload now; try again later.",
                headers={"Retry-After": "60"},
            )

    def queue_depth(self) -> int:
        with self._lock:
            if time.monotonic() - self._depth_at < self.DEPTH_TTL:
                return self._depth
        depth = repository.count_queued(self.db)
        with self._lock:
            self._depth, self._depth_at = depth, time.monotonic()
        return depth

    def check_new_job(self, owner: str) -> None:
        """Raise 503 (queue too deep) or 429 (too many unfinished jobs for this caller)."""
        limit = self.settings.max_queue_depth
        if limit and self.queue_depth() >= limit:
            raise ServiceUnavailable(
                f"The queue holds {limit} or more jobs; try again later.", headers={"Retry-After": "10"}
            )
        most = self.settings.max_unfinished_jobs
        if most and repository.count_unfinished(self.db, owner) >= most:
            raise TooManyRequests(
                f"This key has {most} or more unfinished jobs; wait for some to finish.",
                headers={"Retry-After": "5"},
            )
