"""When to retry a request and how long to wait first: shared by the sync and async clients.

What is retried:

* ``429`` and ``503``, on every request: the server refused before doing anything.
* ``409`` and ``507`` with a ``Retry-After``, on an upload (it carries an ``Idempotency-Key``): an
  earlier try of the same upload is still in progress on the server, or its disk is short for now.
* Connection failures where the request surely never reached the server (connect errors and
  timeouts, no free connection in the pool), on every request.
* Any other transport failure (a read error or timeout, a reset, the server closing mid-answer)
  only on *safe* requests: ``GET``, ``DELETE`` and the upload, which is safe to repeat because it
  carries an ``Idempotency-Key``. ``POST …/cancel`` and ``POST …/retry`` are not repeated then,
  since the first may have taken effect.

Other statuses (``4xx``, and ``5xx`` other than ``503``) are never retried: the same request would
get the same answer. The wait honours ``Retry-After`` (seconds or an HTTP date) and is otherwise a
capped exponential backoff with full jitter: uniform in ``[0, min(backoff_max, backoff·2^n)]``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from filejobs.client.errors import TransportError

log = logging.getLogger("filejobs.client")

RETRY_STATUSES = frozenset({429, 503})
#: Retried only on a request with an Idempotency-Key and only when the server says when.
RETRY_LATER_STATUSES = frozenset({409, 507})
#: Failures that happen before a byte of the request left: safe to repeat for any request.
UNSENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
#: Failures worth another try on a safe request (not: proxy errors, bad URLs, local protocol bugs).
TRANSIENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
#: A ``Retry-After`` longer than this is not waited for: the error is raised with ``retry_after``.
RETRY_AFTER_MAX = 300.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date); ``None`` if
    absent or unreadable. Dates in the past give ``0``."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Retrying:
    """What ``on_retry`` is told before each wait: the request, why, which retry of how many, and
    how long until it (``ConnectError: [Errno 111] Connection refused``, retry 1 of 5 in 0.3 s)."""

    request: str
    reason: str
    retry: int
    retries: int
    delay: float


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more tries after the first; waits as described in the module docstring.
    ``on_retry`` (if any) hears of each retry before its wait, so a caller can say so at once."""

    retries: int = 5
    backoff: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = RETRY_AFTER_MAX
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)
    on_retry: Callable[[Retrying], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("retries, backoff and backoff_max must not be negative")

    def backoff_delay(self, retry: int) -> float:
        """Full jitter for the ``retry``-th retry (0-based)."""
        cap = min(self.backoff_max, self.backoff * 2.0 ** min(retry, 62))
        return cap * self.random()

    def delay(self, retry: int, retry_after: float | None) -> float:
        return retry_after if retry_after is not None else self.backoff_delay(retry)


class Attempts:
    """The tries of one request: each failure asks here whether to try again and after how long."""

    def __init__(self, policy: RetryPolicy, *, safe: bool, retries: int | None = None) -> None:
        self.policy = policy
        self.safe = safe
        self.limit = policy.retries if retries is None else retries
        self.retried = 0

    @property
    def attempts(self) -> int:
        return self.retried + 1

    def retryable_error(self, exc: httpx.HTTPError) -> bool:
        if isinstance(exc, UNSENT_ERRORS):
            return True
        return self.safe and isinstance(exc, TRANSIENT_ERRORS)

    def after_error(self, exc: httpx.HTTPError, request: httpx.Request) -> float:
        """The seconds to wait before the next try; raises :class:`TransportError` to give up."""
        what = f"{request.method} {request.url}"
        if not self.retryable_error(exc) or self.retried >= self.limit:
            tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
            reason = str(exc) or type(exc).__name__
            raise TransportError(f"{what} failed{tries}: {reason}", attempts=self.attempts) from exc
        return self._next(what, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None)

    def after_response(self, response: httpx.Response) -> float | None:
        """``None`` to use ``response`` as it is, or the seconds to wait before trying again."""
        if self.retried >= self.limit or not _retry_status(response):
            return None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None and retry_after > self.policy.retry_after_max:
            return None
        what = f"{response.request.method} {response.request.url}"
        return self._next(what, str(response.status_code), retry_after)

    def _next(self, what: str, reason: str, retry_after: float | None) -> float:
        delay = self.policy.delay(self.retried, retry_after)
        self.retried += 1
        log.info("%s: %s; retry %d of %d in %.2f s", what, reason, self.retried, self.limit, delay)
        if self.policy.on_retry is not None:
            self.policy.on_retry(Retrying(what, reason, self.retried, self.limit, delay))
        return delay


def _retry_status(response: httpx.Response) -> bool:
    if response.status_code in RETRY_STATUSES:
        return True
    return (
        response.status_code in RETRY_LATER_STATUSES
        and "Retry-After" in response.headers
        and "Idempotency-Key" in response.request.headers
    )
