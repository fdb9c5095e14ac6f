"""The Celery floor: a bare Celery app on the same broker and worker settings as filejobs' backend,
whose task does nothing but count itself done.

The ``celery`` group runs it beside filejobs (same broker, same number of ``--concurrency 1``
prefork workers, prefetch 1, acks late, publish confirms) so filejobs' jobs/s can be read as a
ratio to what Celery itself does on this machine: the difference is filejobs' per-job work (the
upload and its row, the claim, the child process, the finish), not the broker.

A worker takes its broker and queue from the environment (``BARE_CELERY_BROKER``,
``BARE_CELERY_QUEUE``); each task ends with one Redis ``INCR`` of the counter key it is given,
which the driver polls (the filejobs side is polled in its database the same way).

The second task, :func:`status_rows` ("bare Celery + status rows"), is the least a Celery-backed job
service that tracks status in PostgreSQL must do per task: claim the task's row (one conditional
``UPDATE … RETURNING`` in autocommit, with ``synchronous_commit=off`` as filejobs' claim) and record
its final status (one durable ``UPDATE``, its own commit), with a plain psycopg connection each,
on the database ``BARE_CELERY_DATABASE`` names (:func:`create_rows` makes its table and rows; the
driver polls it for ``succeeded`` rows, as it polls filejobs' jobs).

    BARE_CELERY_BROKER=redis://127.0.0.1:6379/0 BARE_CELERY_QUEUE=q \\
        python -m scripts.bench.apps.bare_celery worker-name@host
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psycopg
import redis
from celery import Celery

#: Where the count of finished tasks is kept (whatever the broker).
COUNTER_REDIS = "redis://127.0.0.1:6379/0"
NOOP = "bare_celery.noop"
STATUS_ROWS = "bare_celery.status_rows"

#: The rows' table: an id, a status (indexed: a job service finds its queued work by it), the
#: attempt count and the lease, the times. What filejobs' ``jobs`` row also has, and no more.
TABLE = """
CREATE TABLE bare_tasks (
    id text PRIMARY KEY,
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bare_tasks_status ON bare_tasks (status);
"""
CLAIM = """
UPDATE bare_tasks SET status = 'running', attempts = attempts + 1, lease_owner = %(owner)s,
    lease_expires_at = now() + interval '5 minutes', started_at = now(), updated_at = now()
WHERE id = %(id)s AND status = 'queued'
RETURNING id, status, attempts, lease_owner, lease_expires_at, started_at
"""
FINISH = """
UPDATE bare_tasks SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL,
    finished_at = now(), updated_at = now()
WHERE id = %(id)s AND status = 'running' AND lease_owner = %(owner)s
"""


def make_app(broker: str, queue: str) -> Celery:
    """A Celery app with filejobs' reliability settings (see ``filejobs.jobs.celery_app``)."""
    app = Celery("bare_celery", set_as_current=False)
    app.conf.update(
        broker_url=broker,
        task_default_queue=queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app


#: The workers' app: ``celery -A`` imports this module by name in every process it starts.
app = make_app(
    os.environ.get("BARE_CELERY_BROKER", "redis://127.0.0.1:6379/0"),
    os.environ.get("BARE_CELERY_QUEUE", "bare-celery"),
)
_counter: redis.Redis | None = None


@app.task(name=NOOP)
def noop(counter: str, job_id: str) -> None:
    """Nothing, then count one more done (one Redis connection per pool process)."""
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(COUNTER_REDIS)
    _counter.incr(counter)


#: This pool process's connections: (claims with synchronous_commit=off, durable finishes).
_connections: tuple[psycopg.Connection, psycopg.Connection] | None = None


@app.task(name=STATUS_ROWS)
def status_rows(job_id: str) -> None:
    """Claim the task's row, then record it succeeded: two statements, two round trips, one WAL flush."""
    global _connections
    if _connections is None:
        url = os.environ["BARE_CELERY_DATABASE"]
        _connections = (
            psycopg.connect(url, autocommit=True, options="-c synchronous_commit=off"),
            psycopg.connect(url, autocommit=True),
        )
    claims, finishes = _connections
    owner = f"bare-{os.getpid()}"
    if claims.execute(CLAIM, {"id": job_id, "owner": owner}).fetchone() is None:
        return  # another delivery has it, or it is done
    finishes.execute(FINISH, {"id": job_id, "owner": owner})


def create_rows(database_url: str, job_ids: Iterable[str]) -> None:
    """The table and one ``queued`` row per id (before the publish, as filejobs' uploads are)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(TABLE)
        with conn.cursor() as cursor:
            rows = [(job_id,) for job_id in job_ids]
            cursor.executemany("INSERT INTO bare_tasks (id, status) VALUES (%s, 'queued')", rows)


def succeeded_rows(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM bare_tasks WHERE status = 'succeeded'").fetchone()
    return int(row[0]) if row else 0


def publish_rows(app: Celery, job_ids: Iterable[str]) -> None:
    """Publish one :func:`status_rows` task per id."""
    with app.producer_or_acquire() as producer:
        for job_id in job_ids:
            app.send_task(STATUS_ROWS, args=[job_id], producer=producer)


def publish(app: Celery, counter: str, count: int) -> None:
    """Publish ``count`` no-op tasks (each with a job-id-sized argument, as filejobs sends)."""
    with app.producer_or_acquire() as producer:
        for index in range(count):
            app.send_task(NOOP, args=[counter, f"{index:032x}"], producer=producer)


def worker_argv(queue: str, hostname: str, pool: str = "prefork") -> list[str]:
    """The same worker flags as filejobs' ``worker --concurrency 1`` (see ``celery_worker``)."""
    return [
        "worker",
        "--concurrency=1",
        f"--pool={pool}",
        "--loglevel=warning",
        f"--queues={queue}",
        f"--hostname={hostname}",
        "--without-mingle",
        "--without-gossip",
    ]


if __name__ == "__main__":  # pragma: no cover - started by the bench as a worker process
    import sys
    import warnings

    from celery.platforms import SecurityWarning

    warnings.simplefilter("ignore", SecurityWarning)  # root in a container, as filejobs' worker
    app.worker_main(
        worker_argv(app.conf.task_default_queue, sys.argv[1], os.environ.get("BARE_CELERY_POOL", "prefork"))
    )
