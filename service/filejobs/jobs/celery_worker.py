"""``filejobs worker``: a Celery worker whose one task is ``run_job(job_id)``.

Each pool process (prefork by default) builds its own database engine, storage and processor
registry after the fork, and each thread in it its own :class:`RunContext`, which owns the child
process the processor runs in: the same arrangement as a local worker thread. As there, a succeeded
job's final status is handed to the process's :class:`~filejobs.jobs.finisher.Finisher`, and the task
returns (its message is acknowledged) while that commits: the next job's message, claim and run
overlap the commit. A worker killed before the commit leaves the job ``running`` under its lease, as a
kill while the job ran does (the redelivered message finds it running): the sweeper queues it again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from itertools import count
from typing import Any

from celery import Celery

from filejobs import metrics
from filejobs.db import Database
from filejobs.jobs.celery_app import RUN_JOB, make_celery
from filejobs.jobs.celery_dispatch import CeleryDispatcher
from filejobs.jobs.finisher import Finisher
from filejobs.jobs.runner import RunContext, run_job
from filejobs.jobs.worker import worker_identity
from filejobs.processors.registry import Registry, build_registry
from filejobs.settings import Settings, import_database_driver
from filejobs.storage import open_storage

log = logging.getLogger(__name__)


class WorkerRuntime:
    """What one worker process shares between its threads; made after the fork, when the process
    starts (:meth:`TaskRunner.start_process`) or else by its first job."""

    def __init__(self, settings: Settings, app: Celery, must_stop: Callable[[], bool]) -> None:
        self.pid = os.getpid()
        self.settings = settings
        self.must_stop = must_stop
        self.db = Database(settings.resolved_database_url)
        self.storage = open_storage(settings)
        # The scratch of a process of this node killed mid-job (an object store's input copies).
        self.storage.remove_stale_scratch(settings.temp_max_age)
        self.registry: Registry = build_registry(settings.processors)
        self.dispatcher = CeleryDispatcher(settings, self.db, app=app)
        self.identity = worker_identity()
        self.finisher = Finisher(self.db)
        self._local = threading.local()
        self._numbers = count()
        self._contexts: list[RunContext] = []
        self._lock = threading.Lock()

    def context(self) -> RunContext:
        """This thread's context (and child process)."""
        ctx: RunContext | None = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = RunContext(
                db=self.db,
                storage=self.storage,
                registry=self.registry,
                settings=self.settings,
                owner=f"{self.identity}:{next(self._numbers)}",
                must_stop=self.must_stop,
                finisher=self.finisher,
            )
            self._local.ctx = ctx
            with self._lock:
                self._contexts.append(ctx)
        return ctx

    def close(self) -> None:
        with self._lock:
            contexts, self._contexts = self._contexts, []
        self.finisher.close()  # the successes handed over are committed
        for ctx in contexts:
            ctx.child.kill()
        self.db.dispose()


class TaskRunner:
    """The task's body, with the process's runtime made on first use in each process."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        #: Set (in the main process, seen by the forked pool processes) once a warm shutdown has
        #: waited FILEJOBS_SHUTDOWN_GRACE: running jobs then stop and go back to the queue.
        self.stop_event = multiprocessing.get_context("fork").Event()
        self._runtime: WorkerRuntime | None = None
        self._lock = threading.Lock()

    def runtime(self) -> WorkerRuntime:
        with self._lock:
            if self._runtime is None or self._runtime.pid != os.getpid():
                self._runtime = WorkerRuntime(self.settings, self.app, self.stop_event.is_set)
            return self._runtime

    def start_process(self) -> None:
        """Make this pool process's runtime when the process starts (Celery's ``worker_process_init``)
        and open its database connections meanwhile, so that its first job waits for neither.
        The connections open on a thread of their own: a database that does not answer must not
        hold the process past Celery's wait for it to come up (the first claim then tries again).
        A runtime that cannot be made now is made by the first job, which reports why."""
        try:
            runtime = self.runtime()
        except Exception:
            log.exception("worker process %d: cannot prepare for jobs yet", os.getpid())
            return
        threading.Thread(
            target=_open_connections, args=(runtime.db,), name="filejobs-connect", daemon=True
        ).start()

    def __call__(self, job_id: str) -> str | None:
        rt = self.runtime()
        ran = run_job(job_id, rt.context())
        if ran.due_at is not None:
            # Retried with backoff, or delivered before it was due: publish it for when it is.
            rt.dispatcher.submit_at(job_id, ran.due_at)
        return ran.status.value if ran.status is not None else None

    def close(self) -> None:
        with self._lock:
            runtime, self._runtime = self._runtime, None
        if runtime is not None and runtime.pid == os.getpid():
            runtime.close()


def _open_connections(db: Database) -> None:
    try:
        db.open_connections()
    except Exception as exc:  # down or unreachable: the first job's claim connects (or fails) itself
        log.warning("worker process %d: could not connect to the database yet: %s", os.getpid(), exc)


def preload(settings: Settings) -> None:
    """Import, in the worker's main process before it forks its pool, what every pool process
    would otherwise import when it makes its runtime: the processors and the database driver
    (psycopg's import alone took 60-170 ms of each pool process's start). Forked, the pool
    processes find them imported; nothing is connected or opened here."""
    build_registry(settings.processors)
    import_database_driver(settings.resolved_database_url)


def worker_app(settings: Settings) -> tuple[Celery, TaskRunner]:
    """The Celery app with the ``filejobs.run_job`` task registered."""
    app = make_celery(settings)
    runner = TaskRunner(settings, app)

    @app.task(name=RUN_JOB, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_job_task(job_id: str) -> str | None:
        return runner(job_id)

    del run_job_task
    return app, runner


def worker_argv(
    settings: Settings, *, concurrency: int, pool: str, loglevel: str, hostname: str | None = None
) -> list[str]:
    return [
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        f"--queues={settings.queue}",
        f"--hostname={hostname or f'filejobs-{os.getpid()}@%h'}",
        # No worker-to-worker chatter at startup or while running: nothing here needs it.
        "--without-mingle",
        "--without-gossip",
    ]


def run_worker(settings: Settings, **options: Any) -> None:
    """Run a Celery worker in this process until it is told to stop."""
    from celery.signals import (
        worker_process_init,
        worker_process_shutdown,
        worker_ready,
        worker_shutting_down,
    )

    app, runner = worker_app(settings)
    preload(settings)

    def _process_init(**_: Any) -> None:
        runner.start_process()

    def _close(**_: Any) -> None:
        runner.close()
        metrics.mark_process_dead(os.getpid(), settings.prometheus_multiproc_dir)

    def _shutting_down(**_: Any) -> None:
        # Celery's warm shutdown waits for running jobs; after the grace they are handed back
        # to the queue (without spending an attempt) instead of being cut off by a SIGKILL.
        timer = threading.Timer(settings.shutdown_grace, runner.stop_event.set)
        timer.daemon = True
        timer.start()

    if options.get("pool", "prefork") == "prefork":
        worker_process_init.connect(_process_init, weak=False)
    else:  # the jobs run in this process (threads, solo): ready it once the worker is
        worker_ready.connect(_process_init, weak=False)
    worker_process_shutdown.connect(_close, weak=False)
    worker_shutting_down.connect(_shutting_down, weak=False)
    try:
        app.worker_main(worker_argv(settings, **options))
    finally:
        runner.close()
