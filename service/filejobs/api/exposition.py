"""What ``GET /metrics`` serves: the processes' counters and histograms (:mod:`filejobs.metrics`)
and gauges read from the jobs table at scrape time.

The job gauges (``filejobs_jobs``, ``filejobs_queue_depth``, ``filejobs_queue_oldest_seconds``,
``filejobs_database_up``) are not kept by any process: they are read from the database at each
scrape, so any number of API processes, on any number of hosts, report the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy.exc import SQLAlchemyError

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.metrics import process_registry
from filejobs.models import JobStatus, utcnow
from filejobs.webhooks import deliveries

log = logging.getLogger(__name__)


class DatabaseCollector:
    """Gauges read from the jobs table at each collection (two queries)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "filejobs_jobs",
                "Jobs in the database by status and processor (every status of each processor with rows).",
                labels=["status", "processor"],
            ),
            GaugeMetricFamily("filejobs_queue_depth", "Queued jobs that are due to run (backoff passed)."),
            GaugeMetricFamily(
                "filejobs_queue_oldest_seconds",
                "Seconds the longest-waiting due queued job has been due (0 when none is).",
            ),
            GaugeMetricFamily(
                "filejobs_database_up", "1 when the database answered the metrics queries, else 0."
            ),
            GaugeMetricFamily(
                "filejobs_webhook_deliveries_pending", "Webhook deliveries not yet delivered nor given up."
            ),
            GaugeMetricFamily(
                "filejobs_webhook_oldest_pending_seconds",
                "Age of the oldest undelivered webhook delivery (0 when none is).",
            ),
        )

    def describe(self) -> Iterable[Metric]:
        """The families without samples (so a registry learns the names without a query)."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        jobs, depth, oldest, up, pending, pending_age = self._families()
        now = utcnow()
        try:
            counts = repository.count_jobs(self.db)
            due, earliest = repository.queue_stats(self.db, now=now)
            undelivered, oldest_pending = deliveries.pending_stats(self.db)
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %r", exc)
            up.add_metric([], 0)
            return [up]
        by_processor: dict[str, dict[str, int]] = {}
        for status, processor, rows in counts:
            by_processor.setdefault(processor, {})[status] = rows
        for processor in sorted(by_processor):
            rows_by_status = by_processor[processor]
            statuses = [s.value for s in JobStatus] + sorted(set(rows_by_status) - set(JobStatus))
            for status in statuses:
                jobs.add_metric([status, processor], rows_by_status.get(status, 0))
        depth.add_metric([], due)
        oldest.add_metric([], max(0.0, (now - earliest).total_seconds()) if earliest is not None else 0.0)
        up.add_metric([], 1)
        pending.add_metric([], undelivered)
        age = (now - oldest_pending).total_seconds() if oldest_pending is not None else 0.0
        pending_age.add_metric([], max(0.0, age))
        return [jobs, depth, oldest, up, pending, pending_age]


def render_metrics(db: Database, directory: Path | None, accept: str = "") -> tuple[bytes, str]:
    """The exposition for ``GET /metrics``: ``(payload, content type)``.

    ``directory`` is ``Settings.prometheus_multiproc_dir`` (None: this process's metrics only);
    ``accept`` is the request's Accept header (OpenMetrics when asked for; else the text format).
    Queries the database: call it in a worker thread."""
    registry = CollectorRegistry()
    registry.register(process_registry(directory))
    registry.register(DatabaseCollector(db))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
