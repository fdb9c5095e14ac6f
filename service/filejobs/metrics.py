"""Prometheus metrics: what processes did (counters, histograms), and their exposition registry.

Counters and histograms are kept by the process that observed them: uploads by the API process
that received them, job outcomes by whichever process ran ``run_job`` (the API process on the
local backend, Celery worker processes on the celery backend).

Multiprocess safety is prometheus-client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR``
set in the environment *before* the process imports prometheus_client, every process writes its
values to files in that directory, and an exposition merges all of them. The directory must be
shared by the processes of one host, exist before this module is imported (its metrics open their
files as they are made: ``filejobs serve`` and ``filejobs worker`` create it at startup) and be
emptied before they start (stale files of old processes would otherwise be summed in forever).
prometheus_client reads the variable itself; filejobs's code takes the directory from
``Settings.prometheus_multiproc_dir`` and passes it to the functions below.

The job gauges (``filejobs_jobs``, ``filejobs_queue_depth``, ``filejobs_queue_oldest_seconds``)
are not kept by any process: they are read from the database at scrape time
(:mod:`filejobs.api.exposition`), so any number of API processes, on any number of hosts, report
the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from filejobs.models import JobStatus

#: From a trivial ``inspect`` (tens of ms) to the default JOB_TIMEOUT (an hour).
JOB_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: From a small file on a fast link (10 ms) to a multi-GiB one over a slow link (30 min).
UPLOAD_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)

#: The status label of an attempt whose row stopped being ours (cancelled, deleted, lease lost).
LOST = "lost"

JOB_DURATION = Histogram(
    "filejobs_job_duration_seconds",
    "Seconds from claiming a job to recording the attempt's outcome, by processor and the status the "
    "attempt left the job in (queued: retried or returned to the queue; lost: no longer ours).",
    ["processor", "status"],
    buckets=JOB_DURATION_BUCKETS,
)
JOBS_FINISHED = Counter(
    "filejobs_jobs_finished",
    "Job attempts that ended, by processor and the status they left the job in "
    "(queued: retried or returned to the queue; lost: cancelled, deleted or taken over meanwhile).",
    ["processor", "status"],
)
WEBHOOK_DELIVERIES = Counter(
    "filejobs_webhook_deliveries",
    "Webhook delivery attempts by result: delivered (2xx), retry (failed, tried again later), failed "
    "(failed and given up, or a 410) and disabled (failed, and the endpoint was turned off).",
    ["result"],
)
JOB_RETRIES = Counter(
    "filejobs_job_retries",
    "Failed attempts that went back to the queue for another try, by processor.",
    ["processor"],
)
LEASES_EXPIRED = Counter(
    "filejobs_leases_expired",
    "Running jobs whose worker stopped renewing the lease (it died or hung), found by the sweeper, "
    "by the status they were moved to: queued (another attempt) or failed (no attempts left).",
    ["status"],
)
UPLOADS = Counter(
    "filejobs_uploads",
    "Uploads by outcome: accepted (answered 202) or rejected (anything else: an invalid or too large "
    "upload, a client that went away, a server error).",
    ["outcome"],
)
EVENT_STREAMS = Gauge(
    "filejobs_event_streams_open",
    "Server-Sent Event streams (/v1/events, /v1/jobs/{id}/events) open now.",
    multiprocess_mode="livesum",
)
UPLOADED_BYTES = Counter("filejobs_uploaded_bytes", "Bytes of the files of accepted uploads.")
UPLOAD_BYTES_SKIPPED = Counter(
    "filejobs_upload_skipped_bytes",
    "Bytes not uploaded: jobs made by hash from content the key had already stored.",
)
STORED_BYTES_SHARED = Counter(
    "filejobs_stored_shared_bytes",
    "Bytes uploaded again whose content the key already had: not kept twice (the job shares them).",
)
JOBS_REUSED = Counter(
    "filejobs_jobs_reused", "Jobs that took a kept result instead of running, by processor.", ["processor"]
)
UPLOAD_DURATION = Histogram(
    "filejobs_upload_duration_seconds",
    "Seconds from the start of an accepted upload's body to its job being recorded (the 202).",
    buckets=UPLOAD_DURATION_BUCKETS,
)

STORAGE_OPERATIONS = Counter(
    "filejobs_storage_operations",
    "Requests made to the object store (the S3 backend), by operation (put_object, upload_part, "
    "get_object, ...), whatever their outcome.",
    ["operation"],
)
STORAGE_DURATION = Histogram(
    "filejobs_storage_operation_duration_seconds",
    "Seconds each request to the object store (the S3 backend) took, by operation, whatever its "
    "outcome (the client's retries included): e.g. complete_multipart_upload, the store's share of "
    "an upload's last byte -> 202.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
STORAGE_ERRORS = Counter(
    "filejobs_storage_errors",
    "Object store requests that failed, by operation and kind: not_found, unreachable (no "
    "connection, a timeout), denied (credentials, permissions), no_bucket, server (5xx), other.",
    ["operation", "kind"],
)
RESUMABLE_UPLOADS = Counter(
    "filejobs_resumable_uploads",
    "Resumable (tus) uploads by event: created, completed (became a job), refused (complete, but "
    "its type or idempotency key refused: removed), terminated (DELETE), expired (removed by the sweeper).",
    ["event"],
)
RESUMABLE_BYTES = Counter(
    "filejobs_resumable_bytes", "Bytes resumable (tus) PATCHes stored (fsynced, counted in Upload-Offset)."
)

# Every outcome starts at 0, so rate() and increase() see the first rejection too.
for _outcome in ("accepted", "rejected"):
    UPLOADS.labels(_outcome)
for _event in ("created", "completed", "refused", "terminated", "expired"):
    RESUMABLE_UPLOADS.labels(_event)


# ---- instrumentation ------------------------------------------------------------------------


#: The (duration, count) children of each (processor, status) seen: ``labels()`` takes a lock and
#: builds a key on every call (7 of the 16 µs a job's two observations cost in multiprocess mode).
#: A child made before a fork writes to the new process's file (prometheus_client checks the pid).
_ATTEMPT_CHILDREN: dict[tuple[str, str], tuple[Histogram, Counter]] = {}


def job_attempt_ended(processor: str, status: JobStatus | None, seconds: float) -> None:
    """A claimed job's attempt ended in ``status`` (None: the row was no longer ours)."""
    key = (processor, status.value if status is not None else LOST)
    children = _ATTEMPT_CHILDREN.get(key)
    if children is None:
        children = _ATTEMPT_CHILDREN[key] = (JOB_DURATION.labels(*key), JOBS_FINISHED.labels(*key))
    children[0].observe(seconds)
    children[1].inc()


def storage_call(operation: str, error_kind: str | None = None, seconds: float | None = None) -> None:
    """One request to the object store, which took ``seconds``; ``error_kind`` when it failed."""
    STORAGE_OPERATIONS.labels(operation).inc()
    if seconds is not None:
        STORAGE_DURATION.labels(operation).observe(seconds)
    if error_kind is not None:
        STORAGE_ERRORS.labels(operation, error_kind).inc()


def job_retried(processor: str) -> None:
    """A failed attempt went back to the queue."""
    JOB_RETRIES.labels(processor).inc()


class UploadTracker:
    """Handed out by :func:`track_upload`; call :meth:`accepted` once the job is recorded."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.size: int | None = None

    def accepted(self, size: int) -> None:
        self.size = size


@contextmanager
def track_upload() -> Iterator[UploadTracker]:
    """Count an upload: accepted if :meth:`UploadTracker.accepted` was called, else rejected."""
    tracker = UploadTracker()
    try:
        yield tracker
    finally:
        if tracker.size is None:
            UPLOADS.labels("rejected").inc()
        else:
            UPLOAD_DURATION.observe(time.perf_counter() - tracker.started)
            UPLOADED_BYTES.inc(tracker.size)
            UPLOADS.labels("accepted").inc()


# ---- exposition -----------------------------------------------------------------------------


def process_registry(directory: Path | None) -> Collector:
    """Counters and histograms: every process's, merged from the multiprocess ``directory``
    (``Settings.prometheus_multiproc_dir``), or, when that is None, this process's own with the
    default collectors (process, platform, gc)."""
    if directory is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def mark_process_dead(pid: int, directory: Path | None) -> None:
    """Tell the multiprocess files that ``pid`` is gone (for a supervisor whose child exited).

    Harmless in single-process mode. Counters and histograms of the dead process are kept (they
    stay part of the totals); only its live gauges are dropped."""
    if directory is not None:
        multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def start_metrics_server(port: int, directory: Path | None, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from elsewhere
    """Serve this process's (or, in multiprocess mode, this host's processes') counters and
    histograms on ``addr:port`` from a daemon thread, for a worker that has no API. The database
    gauges are left to the API's ``/metrics``, which every scrape of them would query."""
    start_http_server(port, addr=addr, registry=process_registry(directory))
