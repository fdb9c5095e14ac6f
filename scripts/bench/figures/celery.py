"""The Celery backends' throughput: trivial jobs per second with 1 and 2 workers on Redis and on
RabbitMQ, against the local backend measured in the same run.

For each configuration: a fresh PostgreSQL database, a fresh queue, one real ``filejobs serve``
(celery backend) and N real ``filejobs worker --concurrency 1 --log-level warning`` processes (the
level of the API server and of the bare workers: no line per task). Once the workers are
ready, ``JOBS`` tiny ``inspect`` jobs are submitted by ``UPLOADERS`` threads as fast as the API
takes them; the clock runs from the first submit to the last job reaching ``succeeded`` (read from
the database). That figure includes the uploads (HTTP, the file and its row, on the same cores as
the workers), which bare Celery does not do: it cannot pass the accept rate. So a second one,
"from the broker", leaves them out: the API publishes to a queue no worker reads, and once the
``JOBS`` uploads are in, the driver publishes their ``filejobs.run_job(job_id)`` messages to the
workers' queue from one thread, as bare Celery's are published; the clock runs from the first
publish to the last job reaching ``succeeded``. That is filejobs' per-job work in the worker (the
claim, the job's child process, the finish) against bare Celery's no-op task.

Two baselines, run alternately with the brokers in every round so each ratio shares the machine's
conditions: the local backend (``FILEJOBS_WORKERS=N`` in the API process, on a PostgreSQL database
too), and bare Celery (:mod:`scripts.bench.apps.bare_celery`: the same broker, N workers with the
same settings — prefork, concurrency 1, prefetch 1, acks late, publish confirms — draining
``JOBS`` no-op tasks published by one thread; the clock runs from the first publish to the last
task done). The ratio to bare Celery is filejobs' per-job overhead in Celery mode (end to end: the
upload and its row too; from the broker: the claim, the job's child process, the finish) over what
the broker costs. A third, for "from the broker": bare Celery + status rows, the same workers
whose task claims a row and records it succeeded in a fresh PostgreSQL database (one conditional
``UPDATE … RETURNING`` in autocommit, one durable ``UPDATE``; the clock runs to the last row
``succeeded``): the least any Celery-backed service that keeps job status in PostgreSQL does per job,
so the part of the gap that is the database's own work.

Figures, per broker and worker count: end-to-end jobs/s and accept/s (202s per second while
submitting), medians of ``ctx.rounds`` rounds, with the local backend's as the baseline, and jobs/s
from the broker.

    python -m scripts.bench --only celery             # 600 jobs, 1 and 2 workers, 3 rounds
    python -m scripts.bench --only celery --smoke     # 10 jobs, 1 worker, 1 round

Needs PostgreSQL (``postgres`` user, trust), Redis and RabbitMQ (``guest``) on 127.0.0.1, as the
scale-out tests do; when one is unreachable the group fails with a message that says which.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import psycopg
import redis
from celery import Celery

from filejobs.jobs.celery_app import RUN_JOB
from filejobs.testing import Worker, fresh_postgres_database
from filejobs.testing.brokers import cleanup_amqp_queue, cleanup_redis_queue
from scripts.bench.apps import bare_celery
from scripts.bench.common import Context, filejobs_server
from scripts.bench.report import Figure

#: The services this group needs: name -> (what, port).
SERVICES = {"postgres": ("PostgreSQL", 5432), "redis": ("Redis", 6379), "amqp": ("RabbitMQ", 5672)}
BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "amqp": "amqp://guest:guest@127.0.0.1:5672//",
}
BROKER_LABEL = {"redis": "Redis", "amqp": "RabbitMQ"}
#: 600: at bare Celery's 1,400 tasks/s, 200 lasted 0.14 s, which start-up effects and one
#: scheduling hiccup swung.
JOBS, SMOKE_JOBS = 600, 10
WORKER_COUNTS, SMOKE_WORKER_COUNTS = (1, 2), (1,)
UPLOADERS = 4
FINISH_TIMEOUT = 600.0
POLL_EVERY = 0.02

#: Why the ratio to the local backend has no target (the target is the ratio to bare Celery).
NOTE = (
    "no target for the ratio to local: on one machine the broker, the workers and the API share "
    "the same cores, so the "
    "ratio to local shows the cost of the broker hop, not what scaling out across machines buys; "
    "and it swings from 0.4x to 1.2x between runs on 2 shared cores, so a >= 0.8x target would "
    "pass or fail on noise"
)


@dataclass
class Result:
    backend: str  # "local", "<broker>", "held-<broker>", "bare-<broker>" or "rows-<broker>"
    workers: int
    accept_per_s: float
    jobs_per_s: float


class QuietWorker(Worker):
    """``filejobs worker --log-level warning``, ready once it answers a broadcast ping (Celery's
    "ready." line is an INFO one)."""

    def __init__(self, data_dir: Path, *, env: dict[str, str], control: Celery, name: str) -> None:
        super().__init__(data_dir, env=env, concurrency=1, name=name)
        self.control = control

    def argv(self) -> list[str]:
        return [*super().argv(), "--log-level", "warning"]

    def is_ready(self) -> bool:
        replies = self.control.control.ping(timeout=0.5) or []
        return any(name.startswith(f"filejobs-{self.pid}@") for reply in replies for name in reply)


#: (backend, workers) -> one Result per round.
Results = dict[tuple[str, int], list[Result]]


def require_services() -> None:
    """Raise a RuntimeError naming every service that does not answer on 127.0.0.1."""
    down = []
    for name, port in SERVICES.values():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        except OSError as exc:
            down.append(f"{name} at 127.0.0.1:{port} ({exc})")
    if down:
        raise RuntimeError(
            "the celery group needs PostgreSQL, Redis and RabbitMQ on 127.0.0.1; unreachable: "
            + "; ".join(down)
        )


def delete_queue(backend: str, queue: str) -> None:
    if backend == "redis":
        cleanup_redis_queue(BROKERS[backend], queue)
    else:
        cleanup_amqp_queue(BROKERS[backend], queue)


def succeeded(conn: psycopg.Connection) -> int:
    """Jobs that succeeded so far; raises if any failed or was cancelled."""
    rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    counts = {status: int(n) for status, n in rows}
    bad = counts.get("failed", 0) + counts.get("cancelled", 0)
    if bad:
        raise RuntimeError(f"{bad} job(s) did not succeed")
    return counts.get("succeeded", 0)


def upload(base_url: str, jobs: int, uploaders: int) -> list[str]:
    """Submit ``jobs`` tiny jobs from ``uploaders`` threads; their ids."""
    errors: list[str] = []
    ids: list[str] = []
    per_thread = [jobs // uploaders + (1 if i < jobs % uploaders else 0) for i in range(uploaders)]

    def submit(count: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for index in range(count):
                response = client.post(
                    "/v1/jobs",
                    files={"file": (f"f{index}.txt", b"hello world\n", "text/plain")},
                    data={"processor": "inspect"},
                )
                if response.status_code != 202:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                    return
                ids.append(response.json()["id"])

    threads = [threading.Thread(target=submit, args=(n,)) for n in per_thread if n]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"submits failed: {errors[:3]}")
    return ids


def wait_succeeded(conn: psycopg.Connection, jobs: int) -> float:
    """Poll until ``jobs`` jobs succeeded; then the clock."""
    deadline = time.monotonic() + FINISH_TIMEOUT
    while succeeded(conn) < jobs:
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs did not finish within {FINISH_TIMEOUT:g} s")
        time.sleep(POLL_EVERY)
    return time.perf_counter()


def drive(base_url: str, database_url: str, jobs: int, uploaders: int) -> tuple[float, float]:
    """Submit ``jobs`` tiny jobs from ``uploaders`` threads; (accept/s, end-to-end jobs/s)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        start = time.perf_counter()
        upload(base_url, jobs, uploaders)
        accepted_at = time.perf_counter()
        done_at = wait_succeeded(conn, jobs)
    return jobs / (accepted_at - start), jobs / (done_at - start)


def drive_held(
    base_url: str, database_url: str, jobs: int, uploaders: int, publisher: Celery
) -> tuple[float, float]:
    """Upload ``jobs`` tiny jobs (their messages go to a queue no worker reads), then publish their
    ``run_job`` messages to the workers' queue from one thread; (accept/s, jobs/s from the first
    publish to the last succeeded)."""
    start = time.perf_counter()
    ids = upload(base_url, jobs, uploaders)
    accept = jobs / (time.perf_counter() - start)
    with psycopg.connect(database_url, autocommit=True) as conn:
        start = time.perf_counter()
        with publisher.producer_or_acquire() as producer:
            for job_id in ids:
                publisher.send_task(RUN_JOB, args=[job_id], producer=producer)
        done_at = wait_succeeded(conn, jobs)
    return accept, jobs / (done_at - start)


def run_config(backend: str, workers: int, jobs: int, root: Path) -> Result:
    """One measurement: a fresh database (and queue), the API, ``workers`` workers, ``jobs`` jobs.
    ``held-<broker>``: the API publishes to a queue of its own and the driver to the workers'."""
    held = backend.startswith("held-")
    broker = backend.removeprefix("held-")
    with fresh_postgres_database() as database_url, ExitStack() as stack:
        queue = f"fj-bench-{uuid.uuid4().hex[:10]}"
        data_dir = root / f"{backend}-{workers}-{queue}" / "data"
        env = {"FILEJOBS_DATABASE_URL": database_url, "FILEJOBS_SWEEP_INTERVAL": "10"}
        if backend == "local":
            env["FILEJOBS_WORKERS"] = str(workers)
        else:
            env.update(
                {
                    "FILEJOBS_BACKEND": "celery",
                    "FILEJOBS_BROKER_URL": BROKERS[broker],
                    "FILEJOBS_QUEUE": queue,
                    "FILEJOBS_WORKERS": "0",
                }
            )
            stack.callback(delete_queue, broker, queue)  # runs after the processes are gone
        api_env = dict(env)
        if held:
            api_env["FILEJOBS_QUEUE"] = f"{queue}-held"
            stack.callback(delete_queue, broker, f"{queue}-held")
        control = bare_celery.make_app(BROKERS[broker], queue) if backend != "local" else None
        if control is not None:
            stack.callback(control.close)
        started = []
        for index in range(workers if control is not None else 0):
            assert control is not None
            worker = QuietWorker(data_dir, env=env, control=control, name=f"worker{index}")
            stack.callback(worker.stop)
            started.append(worker.spawn())  # starts while the API starts (and migrates)
        server = stack.enter_context(filejobs_server(data_dir, api_env))
        for worker in started:
            worker.wait_ready()
        if held:
            assert control is not None
            accept, jobs_per_s = drive_held(server.base_url, database_url, jobs, UPLOADERS, control)
        else:
            accept, jobs_per_s = drive(server.base_url, database_url, jobs, UPLOADERS)
        return Result(backend, workers, accept, jobs_per_s)


BARE_READY_TIMEOUT = 60.0


def bare_workers_ready(app: Celery, hostnames: list[str]) -> None:
    """Wait until every bare worker answers a broadcast ping (they run without mingle/gossip)."""
    deadline = time.monotonic() + BARE_READY_TIMEOUT
    while time.monotonic() < deadline:
        replies = app.control.ping(destination=hostnames, timeout=0.5) or []
        if {name for reply in replies for name in reply} >= set(hostnames):
            return
    raise RuntimeError(f"bare Celery workers {hostnames} not ready within {BARE_READY_TIMEOUT:g} s")


def run_bare(broker: str, workers: int, jobs: int, *, rows: bool = False) -> Result:
    """Bare Celery on ``broker``: ``workers`` prefork workers drain ``jobs`` no-op tasks, or with
    ``rows`` ("bare Celery + status rows") ``jobs`` tasks that claim and finish a row each in a
    fresh PostgreSQL database (:func:`scripts.bench.apps.bare_celery.status_rows`)."""
    with ExitStack() as stack:
        queue = f"fj-bare-{uuid.uuid4().hex[:10]}"
        env = {**os.environ, "BARE_CELERY_BROKER": BROKERS[broker], "BARE_CELERY_QUEUE": queue}
        app = bare_celery.make_app(BROKERS[broker], queue)
        stack.callback(delete_queue, broker, queue)  # runs last: after the workers are gone
        stack.callback(app.close)
        if rows:
            database_url = stack.enter_context(fresh_postgres_database())
            env["BARE_CELERY_DATABASE"] = database_url
            ids = [uuid.uuid4().hex for _ in range(jobs)]
            bare_celery.create_rows(database_url, ids)
            conn = stack.enter_context(psycopg.connect(database_url, autocommit=True))
            publish = partial(bare_celery.publish_rows, app, ids)
            done = partial(bare_celery.succeeded_rows, conn)
        else:
            counter = f"{queue}-done"
            counts = redis.Redis.from_url(bare_celery.COUNTER_REDIS)
            stack.callback(counts.close)
            stack.callback(counts.delete, counter)
            publish = partial(bare_celery.publish, app, counter, jobs)

            def done() -> int:
                return int(counts.get(counter) or 0)

        hostnames = [f"bare{index}-{queue}@bench" for index in range(workers)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "scripts.bench.apps.bare_celery", name],
                env=env,
                stdout=subprocess.DEVNULL,
            )
            for name in hostnames
        ]
        stack.callback(stop_processes, procs)
        bare_workers_ready(app, hostnames)
        start = time.perf_counter()
        publish()
        published = time.perf_counter()
        deadline = time.monotonic() + FINISH_TIMEOUT
        while done() < jobs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"bare Celery tasks did not finish within {FINISH_TIMEOUT:g} s")
            time.sleep(POLL_EVERY)
        finished = time.perf_counter()
        backend = f"{'rows' if rows else 'bare'}-{broker}"
        return Result(backend, workers, jobs / (published - start), jobs / (finished - start))


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(
    ctx: Context, root: Path, jobs: int, worker_counts: tuple[int, ...], brokers: list[str]
) -> Results:
    """``ctx.rounds`` rounds of every configuration, alternating within each round, in the opposite
    order every other round (local first, then last): on a machine whose speed drifts, neither
    filejobs nor a baseline is always the one measured first."""
    results: Results = {}
    for round_no in range(1, ctx.rounds + 1):
        for workers in worker_counts:
            held = [f"held-{b}" for b in brokers]
            bare = [f"{kind}-{b}" for b in brokers for kind in ("bare", "rows")]
            order = ["local", *brokers, *held, *bare]
            if round_no % 2 == 0:
                order.reverse()
            for backend in order:
                if backend.startswith(("bare-", "rows-")):
                    kind, broker = backend.split("-", 1)
                    result = run_bare(broker, workers, jobs, rows=kind == "rows")
                else:
                    result = run_config(backend, workers, jobs, root)
                results.setdefault((backend, workers), []).append(result)
                ctx.say(
                    f"   round {round_no}: {backend:10} with {workers} worker(s): "
                    f"accept {result.accept_per_s:7.1f}/s, jobs {result.jobs_per_s:7.1f}/s"
                )
    return results


def figures(
    results: Results, jobs: int, worker_counts: tuple[int, ...], brokers: list[str], smoke: bool
) -> list[Figure]:
    out: list[Figure] = []
    for broker in brokers:
        for workers in worker_counts:
            local = results[("local", workers)]
            bare = results[(f"bare-{broker}", workers)]
            mine = results[(broker, workers)]
            held = results[(f"held-{broker}", workers)]
            rows = results[(f"rows-{broker}", workers)]
            plural = "s" if workers > 1 else ""
            where = f"Celery on {BROKER_LABEL[broker]}, {workers} worker{plural}"
            detail = f"{jobs} trivial inspect jobs, {UPLOADERS} uploaders, medians of {len(mine)} round(s)"
            out.append(
                Figure(
                    key=f"celery_{broker}_{workers}w_jobs_per_s",
                    label=f"{where}: jobs/s",
                    unit="jobs/s",
                    value=statistics.median(r.jobs_per_s for r in mine),
                    baselines={
                        "local": statistics.median(r.jobs_per_s for r in local),
                        "bare Celery": statistics.median(r.jobs_per_s for r in bare),
                    },
                    target=">= 0.5x bare Celery",
                    met=None if smoke else half_of_bare(mine, bare),
                    note=f"first submit to last succeeded (the uploads included: bounded by the "
                    f"accept rate); bare Celery: first publish to last no-op task done, same broker "
                    f"and worker settings; {detail}; {NOTE}",
                )
            )
            out.append(
                Figure(
                    key=f"celery_{broker}_{workers}w_broker_jobs_per_s",
                    label=f"{where}: jobs/s from the broker",
                    unit="jobs/s",
                    value=statistics.median(r.jobs_per_s for r in held),
                    baselines={
                        "bare Celery": statistics.median(r.jobs_per_s for r in bare),
                        "bare Celery + status rows": statistics.median(r.jobs_per_s for r in rows),
                    },
                    target=">= 0.5x bare Celery",
                    met=None if smoke else half_of_bare(held, bare),
                    note=f"the jobs uploaded first, then their messages published from one thread; "
                    f"first publish to last succeeded (claim, child, finish), as bare Celery's "
                    f"first publish to last no-op task done; bare Celery + status rows: its task "
                    f"claims a row (one UPDATE ... RETURNING, autocommit) and records it succeeded "
                    f"(one durable UPDATE) in PostgreSQL, the database's own share of a job; "
                    f"{jobs} trivial inspect jobs, medians of {len(held)} round(s)",
                )
            )
            out.append(
                Figure(
                    key=f"celery_{broker}_{workers}w_accept_per_s",
                    label=f"{where}: accepts/s",
                    unit="req/s",
                    value=statistics.median(r.accept_per_s for r in mine),
                    baselines={"local": statistics.median(r.accept_per_s for r in local)},
                    note=f"202s per second while submitting; {detail}; {NOTE}",
                )
            )
    return out


def half_of_bare(runs: list[Result], bare: list[Result]) -> bool:
    """The target: the median jobs/s of ``runs`` at least half bare Celery's."""
    mine, theirs = (statistics.median(r.jobs_per_s for r in rs) for rs in (runs, bare))
    return mine >= 0.5 * theirs


def run(ctx: Context) -> list[Figure]:
    require_services()
    jobs = SMOKE_JOBS if ctx.smoke else JOBS
    worker_counts = SMOKE_WORKER_COUNTS if ctx.smoke else WORKER_COUNTS
    brokers = list(BROKERS)
    results = measure(ctx, ctx.subdir("celery"), jobs, worker_counts, brokers)
    return figures(results, jobs, worker_counts, brokers, ctx.smoke)
