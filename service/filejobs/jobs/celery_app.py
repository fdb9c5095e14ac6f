"""The Celery application of the ``celery`` backend: its reliability settings and its one task.

Only the job id crosses the broker. The task calls the same :func:`~filejobs.jobs.runner.run_job`
as the local pool, so a duplicate delivery is harmless: its conditional claim finds the job
already running (or finished) and the task ends at once.

Why each setting (see README "Scaling out"):

- ``task_acks_late`` + ``task_reject_on_worker_lost``: the message is acknowledged after the task
  returns, so a worker that dies mid-job leaves it unacknowledged and the broker delivers it again.
- ``worker_prefetch_multiplier=1``: a busy worker does not sit on messages another could run.
- ``visibility_timeout`` (Redis) above the hard time limit: Redis redelivers an unacknowledged
  message after it, which must never happen to a job that is still legitimately running.
- time limits from ``FILEJOBS_JOB_TIMEOUT``: ``run_job`` kills the job's process at the timeout
  (and records ``timeout``); Celery's soft and hard limits sit above it as a backstop for a pool
  process that hangs outside the job.
- ``confirm_publish`` (RabbitMQ): a publish returns once the broker has the message, so
  ``dispatched_at`` is only recorded for messages the broker really holds.
- Results are not stored in Celery: the job row is the result.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from filejobs.settings import Settings

RUN_JOB = "filejobs.run_job"

#: Seconds of the hard time limit beyond the job timeout and cancel grace.
HARD_LIMIT_MARGIN = 60.0
#: Seconds of the Redis visibility timeout beyond the hard time limit.
VISIBILITY_MARGIN = 300.0


def time_limits(settings: Settings) -> tuple[float, float]:
    """(soft, hard) Celery time limits for one job."""
    base = settings.job_timeout + settings.cancel_grace
    return base + HARD_LIMIT_MARGIN / 2, base + HARD_LIMIT_MARGIN


def celery_config(settings: Settings) -> dict[str, Any]:
    soft, hard = time_limits(settings)
    return {
        "broker_url": settings.broker_url,
        "task_default_queue": settings.queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": soft,
        "task_time_limit": hard,
        "broker_transport_options": {
            "visibility_timeout": int(hard + VISIBILITY_MARGIN),
            "confirm_publish": True,
        },
        # A running job keeps its lease in the database; a redelivered copy finds it running.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5.0,
        # A publish that fails is not lost: the row stays undispatched and the sweeper publishes it.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.0,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "enable_utc": True,
    }


def make_celery(settings: Settings) -> Celery:
    """The Celery app for ``settings`` (publishing side; the worker registers its task on it)."""
    if not settings.broker_url:
        raise ValueError("FILEJOBS_BACKEND=celery needs FILEJOBS_BROKER_URL (redis://… or amqp://…).")
    app = Celery("filejobs", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
