"""The sender: posts the outbox's due deliveries, signed, and records each attempt.

It runs as a task on the event loop of the API process that holds the sweeper lock (one per
deployment, with either backend; see docs/webhooks.md for why), and wakes when a transaction of
this process committed deliveries (noticed at the job change that follows it), on PostgreSQL when
any process did (the outbox's NOTIFY), when a retry comes due, and every ``webhook_poll_interval``
in any case. Deliveries run as tasks, at most
``webhook_concurrency`` at once and ``webhook_endpoint_concurrency`` per endpoint, so a slow
receiver holds a few slots of its own and never the others'. Each attempt: resolve the host, check
every address again (:mod:`filejobs.webhooks.address`), POST to the checked one within
``webhook_timeout`` seconds in all, no redirect followed; a 2xx is delivered, anything else is
retried on ``webhook_retry_schedule`` with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Callable
from functools import partial

from anyio import to_thread

from filejobs import metrics
from filejobs.background import BackgroundTask
from filejobs.db import Database
from filejobs.models import utcnow
from filejobs.settings import Settings
from filejobs.webhooks import address, deliveries, outbox, signing
from filejobs.webhooks.deliveries import Claimed
from filejobs.webhooks.transport import PinnedSender

log = logging.getLogger(__name__)

#: Seconds past WEBHOOK_TIMEOUT a claimed delivery stays claimed (then another try may take it).
CLAIM_MARGIN = 5.0
#: Seconds to wait after a failed look for due deliveries.
STEP_RETRY = 1.0
#: Least seconds between two looks: a burst of job changes costs one query, not one each.
MIN_GAP = 0.01


class WebhookSender(BackgroundTask):
    task_name = "filejobs webhook sender"

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        leader: Callable[[], bool],
        on_change: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._leader = leader
        self._on_change = on_change
        self._wake = asyncio.Event()
        self._inflight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._saturated = False
        #: :data:`filejobs.webhooks.outbox.RECORDED` when a job change here last woke the sender.
        self._recorded = outbox.RECORDED.value
        self._http = PinnedSender(
            timeout=settings.webhook_timeout, connections_per_pool=settings.webhook_endpoint_concurrency
        )

    def wake(self, _delivery_id: str = "") -> None:
        """Look for due deliveries now: deliveries were made (here, or anywhere on PostgreSQL: the
        outbox's NOTIFY), or one was retried. On the event loop."""
        self._wake.set()

    def job_changed(self, _job_id: str) -> None:
        """A job changed in this process (after its commit): look only if a transaction of this
        process committed deliveries since the last such look (one integer compare per change)."""
        recorded = outbox.RECORDED.value
        if recorded != self._recorded:
            self._recorded = recorded
            self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        await super().stop()
        tasks = list(self._tasks)
        for task in tasks:  # their rows stay claimed until the claim runs out: sent again then
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._http.aclose()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.webhook_poll_interval)
            if (gap := last + MIN_GAP - loop.time()) > 0:
                await asyncio.sleep(gap)
            self._wake.clear()
            if not self._leader():
                continue
            last = loop.time()
            try:
                await self._step()
            except Exception:
                log.exception("looking for due webhook deliveries failed; trying again")
                await asyncio.sleep(STEP_RETRY)

    async def _step(self) -> None:
        settings = self._settings
        free = settings.webhook_concurrency - len(self._tasks)
        if free <= 0:
            self._saturated = True
            return
        per_lane = settings.webhook_endpoint_concurrency
        claimed = await to_thread.run_sync(
            partial(
                deliveries.claim_due,
                self._db,
                capacity={lane: per_lane - n for lane, n in self._inflight.items()},
                default_capacity=per_lane,
                limit=free,
                lease_seconds=settings.webhook_timeout + CLAIM_MARGIN,
            )
        )
        self._saturated = len(claimed) >= free or any(
            self._inflight[lane] >= per_lane for lane in self._inflight
        )
        for item in claimed:
            self._inflight[item.lane] += 1
            task = asyncio.create_task(self._deliver(item), name=f"webhook {item.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, item: Claimed) -> None:
        try:
            await self._attempt(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook %s: recording the attempt failed; it is tried again later", item.id)
        finally:
            self._inflight[item.lane] -= 1
            if self._inflight[item.lane] <= 0:
                del self._inflight[item.lane]
            if self._saturated:
                self._wake.set()

    async def _attempt(self, item: Claimed) -> None:
        import httpx  # loaded by the first delivery (see filejobs.webhooks)

        settings = self._settings
        status: int | None = None
        error = ""
        body = item.payload.encode()
        target: address.Resolved | None = None
        try:
            async with asyncio.timeout(settings.webhook_timeout):
                target = await self._resolve(item.url)
                headers = signing.headers(msg_id=item.id, timestamp=utcnow(), body=body, secrets=item.secrets)
                status = await self._http.post(target, headers=headers, body=body)
        except TimeoutError:
            error = f"no answer within {settings.webhook_timeout:g} s"
            if target is not None:  # the request was cancelled: its pool may be left stuck
                self._http.forget(target)
        except address.RefusedURL as exc:
            error = f"refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # anything else about this target is a failed attempt, never a stuck row
            log.exception("webhook %s: the attempt failed unexpectedly", item.id)
            error = f"unexpected {type(exc).__name__}"
        if status is not None and 200 <= status < 300:
            await to_thread.run_sync(partial(deliveries.record_delivered, self._db, item, status_code=status))
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            log.info(
                "webhook %s delivered to %s (%d) on attempt %d", item.id, item.lane, status, item.attempts
            )
        else:
            if status is not None:
                error = f"answered {status}"
            outcome = await to_thread.run_sync(
                partial(
                    deliveries.record_failed,
                    self._db,
                    item,
                    status_code=status,
                    error=error,
                    schedule=settings.webhook_retry_schedule,
                    disable_after=settings.webhook_disable_after,
                )
            )
            metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
            log.info(
                "webhook %s to %s: attempt %d failed (%s): %s",
                item.id,
                item.lane,
                item.attempts,
                error,
                outcome,
            )
            if outcome == "retry":
                self._wake_later(item.attempts)
        if item.job_id:
            self._on_change(item.job_id)

    def _wake_later(self, attempts: int) -> None:
        schedule = self._settings.webhook_retry_schedule
        if attempts <= len(schedule):  # the row's time has ±20 % jitter: look just after the latest
            asyncio.get_running_loop().call_later(schedule[attempts - 1] * 1.2 + 0.01, self._wake.set)

    async def _resolve(self, url: str) -> address.Resolved:
        """Check the URL again and resolve its host once (the addresses connected to)."""
        settings = self._settings
        parsed = address.check_form(url, allow_http=settings.webhook_allow_http)
        if address.is_ip_literal(parsed.host):  # nothing to resolve (nor a thread hop to pay)
            return address.check_addresses(
                parsed, [parsed.host], allow_private=settings.webhook_allow_private
            )
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parsed.host, address.port_of(parsed), type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError, OSError):
            infos = []
        return address.check_addresses(
            parsed, [str(info[4][0]) for info in infos], allow_private=settings.webhook_allow_private
        )
