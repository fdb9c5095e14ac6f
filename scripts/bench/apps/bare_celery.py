"""The Celery floor: a bare Celery app on the same broker and worker settings as filejobs' backend,
whose task does nothing but count itself done.

The ``celery`` group runs it beside filejobs (same broker, same number of ``--concurrency 1``
prefork workers, prefetch 1, acks late, publish confirms) so filejobs' jobs/s can be read as a
ratio to what Celery itself does on this machine: the difference is filejobs' per-job work (the
upload and its row, the claim, the child process, the finish), not the broker.

A worker takes its broker and queue from the environment (``BARE_CELERY_BROKER``,
``BARE_CELERY_QUEUE``); each task ends with one Redis ``INCR`` of the counter key it is given,
which the driver polls (the filejobs side is polled in its database the same way).

    BARE_CELERY_BROKER=redis://127.0.0.1:6379/0 BARE_CELERY_QUEUE=q \\
        python -m scripts.bench.apps.bare_celery worker-name@host
"""

from __future__ import annotations

import os

import redis
from celery import Celery

#: Where the count of finished tasks is kept (whatever the broker).
COUNTER_REDIS = "redis://127.0.0.1:6379/0"
NOOP = "bare_celery.noop"


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


def publish(app: Celery, counter: str, count: int) -> None:
    """Publish ``count`` no-op tasks (each with a job-id-sized argument, as filejobs sends)."""
    with app.producer_or_acquire() as producer:
        for index in range(count):
            app.send_task(NOOP, args=[counter, f"{index:032x}"], producer=producer)


def worker_argv(queue: str, hostname: str) -> list[str]:
    """The same worker flags as filejobs' ``worker --concurrency 1`` (see ``celery_worker``)."""
    return [
        "worker",
        "--concurrency=1",
        "--pool=prefork",
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
    app.worker_main(worker_argv(app.conf.task_default_queue, sys.argv[1]))
