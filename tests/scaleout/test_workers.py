"""Celery workers as separate processes: several of them share a queue, one dies with its job in
hand, a pool process dies, the broker delivers a job many times. The job row stays the truth: each
job runs to the end exactly once per attempt it needed.

Each test has its own PostgreSQL database and broker queue, and every wait polls real state (a
job row, a log file, a process table) within a deadline.
"""

from __future__ import annotations

import hashlib
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy.engine import make_url

from filejobs.jobs.celery_dispatch import CeleryDispatcher
from filejobs.testing import TERMINAL, Cluster, Worker, lease_pid, submit, wait_for, wait_gone, wait_until
from tests.scaleout.conftest import Record

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e]

#: Fast recovery: a lease of 2 s, a sweeper pass every 0.5 s.
FAST = {"lease_seconds": 2, "sweep_interval": 0.5}
#: How long a recovery may take at most: the lease, plus generous room for a loaded 2-core box.
#: Not the Redis visibility timeout (over an hour), which is what recovery would take without
#: the lease.
RECOVERY_BOUND = 2 + 30.0


def test_two_workers_finish_a_batch(cluster: Cluster) -> None:
    first, second = cluster.worker(1), cluster.worker(1)
    api = cluster.api()
    cluster.workers_ready(first, second)

    with api.client() as client:
        # prefetch 1 + acks late: a concurrency-1 worker busy with one sleeper cannot take the
        # other, so the two run at once only if each worker has one.
        sleepers = [
            submit(client, processor="sleep", params={"seconds": 2, "steps": 20})["id"] for _ in range(2)
        ]

        def both_running() -> set[int]:
            rows = cluster.jobs(sleepers).values()
            running = all(job.status == "running" for job in rows)
            return {lease_pid(job.lease_owner) for job in rows} if running else set()

        owners = wait_until(both_running, timeout=20, what="both sleepers to run at once")
        assert owners & first.job_pids(), owners
        assert owners & second.job_pids(), owners

        small = [submit(client, f"file {i}\n".encode(), name=f"f{i}.txt")["id"] for i in range(20)]

    everything = sleepers + small
    rows = cluster.wait_jobs(everything, timeout=60)
    assert {job_id: (job.status, job.attempts) for job_id, job in rows.items()} == {
        job_id: ("succeeded", 1) for job_id in everything
    }
    runs = cluster.running_lines()
    assert Counter(job_id for job_id, *_ in runs) == Counter(everything), "a job ran twice or never"
    per_worker = Counter(worker for *_, worker in runs)
    assert per_worker[first.name] >= 1, per_worker
    assert per_worker[second.name] >= 1, per_worker
    print(f"jobs per worker: {dict(per_worker)}")


def processing(job: dict[str, Any]) -> bool:
    """Running, and its processor has reported progress (so its processor process exists)."""
    return job["status"] == "running" and job["progress"] > 0


def _wait_reclaimed(cluster: Cluster, job_id: str, attempt: int, *, since: float, timeout: float) -> float:
    """Seconds from ``since`` (a monotonic time) until the job runs its ``attempt``-th attempt (or
    has finished)."""

    def reclaimed() -> bool:
        job = cluster.job(job_id)
        return job.status in TERMINAL or (job.status == "running" and job.attempts >= attempt)

    wait_until(reclaimed, timeout=timeout, what=f"job {job_id} to run attempt {attempt}")
    return time.monotonic() - since


def kill_the_worker_running_a_job(
    cluster: Cluster, record: Record, kill: Callable[[Worker], list[psutil.Process]]
) -> None:
    """Two workers; a job runs on one of them; ``kill(that worker)`` returns the processes it
    killed (all gone). The other worker runs the job again and it succeeds at attempt 2, within
    the lease (2 s) plus room, not the Redis visibility timeout (over an hour)."""
    first, second = cluster.worker(1, **FAST), cluster.worker(1, **FAST)
    api = cluster.api(**FAST)
    cluster.workers_ready(first, second)

    with api.client() as client:
        cluster.warm_up(client, [first, second])
        job_id = submit(client, processor="sleep", params={"seconds": 3, "steps": 30})["id"]
        wait_for(client, job_id, processing, timeout=20)
        pid = lease_pid(cluster.job(job_id).lease_owner)
        holders = [w for w in (first, second) if pid in w.job_pids()]
        assert len(holders) == 1, f"lease pid {pid} is in no worker (or in both)"
        victim = holders[0]
        survivor = second if victim is first else first
        assert victim.processor_children(), "the running job has no processor process"

        killed_at = time.monotonic()
        killed = kill(victim)
        recovered = _wait_reclaimed(cluster, job_id, 2, since=killed_at, timeout=RECOVERY_BOUND)
        done = wait_for(client, job_id, lambda job: job["status"] in TERMINAL, timeout=30)

    record("recovery_seconds", recovered)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["result"]["pid"] not in {p.pid for p in killed}
    runs = [(attempt, worker) for job, _, attempt, worker in cluster.running_lines() if job == job_id]
    assert sorted(runs) == [(1, victim.name), (2, survivor.name)], runs
    assert recovered < RECOVERY_BOUND
    assert survivor.returncode is None, "the surviving worker died"


def test_kill9_worker_tree_running_a_job(cluster: Cluster, record: Record) -> None:
    """The machine running the job dies: worker, pool processes and processor children at once."""
    kill_the_worker_running_a_job(cluster, record, lambda victim: victim.kill9_tree())


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_kill9_worker_main_process_running_a_job(cluster: Cluster, record: Record) -> None:
    """Only the worker's main process dies: its pool processes (Celery gives them a parent-death
    signal) and their processor processes must follow it, not run on as orphans."""

    def kill_main(victim: Worker) -> list[psutil.Process]:
        tree = victim.descendants()
        victim.kill9()
        assert victim.returncode == -signal.SIGKILL
        survivors = wait_gone(tree, 10)
        assert not survivors, f"orphans outlived the worker: {[p.pid for p in survivors]}"
        return tree

    kill_the_worker_running_a_job(cluster, record, kill_main)


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_kill9_pool_process_running_a_job(cluster: Cluster, record: Record) -> None:
    worker = cluster.worker(1, **FAST)
    api = cluster.api(**FAST)
    worker.wait_ready()

    with api.client() as client:
        cluster.warm_up(client, [worker])
        job_id = submit(client, processor="sleep", params={"seconds": 3, "steps": 30})["id"]
        wait_for(client, job_id, processing, timeout=20)
        pid = lease_pid(cluster.job(job_id).lease_owner)
        assert worker.pool_pids() == [pid], (worker.pool_pids(), pid)
        processors = [p for p in worker.processor_children() if p.ppid() == pid]
        assert processors, "the pool process has no processor child"

        killed_at = time.monotonic()
        worker.kill9_process(pid)
        assert not wait_gone(processors, 10), "the processor child outlived its pool process"
        recovered = _wait_reclaimed(cluster, job_id, 2, since=killed_at, timeout=RECOVERY_BOUND)
        done = wait_for(client, job_id, lambda job: job["status"] in TERMINAL, timeout=30)

    record("recovery_seconds", recovered)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert worker.returncode is None, "the worker died with its pool process"
    refilled = worker.pool_pids()
    assert len(refilled) == 1, refilled
    assert pid not in refilled, "the pool was not refilled"
    assert [attempt for job, _, attempt, _ in cluster.running_lines() if job == job_id] == [1, 2]
    assert recovered < RECOVERY_BOUND


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_duplicate_deliveries_run_once(cluster: Cluster, broker_url: str) -> None:
    first, second = cluster.worker(2), cluster.worker(2)
    api = cluster.api()
    cluster.workers_ready(first, second)

    dispatcher = CeleryDispatcher(cluster.settings, cluster.db)
    try:
        with api.client() as client:
            ids = [
                submit(client, processor="sleep", params={"seconds": 0.5, "steps": 5})["id"]
                for _ in range(10)
            ]
        for _ in range(5):
            for job_id in ids:
                assert dispatcher.publish(job_id), "the broker did not take a duplicate"
    finally:
        dispatcher.close()

    rows = cluster.wait_jobs(ids, timeout=60)
    # Every message, the 10 originals and the 50 copies, consumed and acknowledged.
    broker = redis.Redis.from_url(broker_url)
    try:

        def all_consumed() -> bool:
            unacked = [p for p in broker.hvals("unacked") if cluster.queue.encode() in p]
            return broker.llen(cluster.queue) == 0 and not unacked

        wait_until(all_consumed, timeout=30, what="the broker to deliver every copy")
    finally:
        broker.close()

    assert {job_id: (job.status, job.attempts) for job_id, job in rows.items()} == {
        job_id: ("succeeded", 1) for job_id in ids
    }
    assert cluster.runs_per_job() == Counter(ids), "a duplicate delivery ran a job again"


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_sigterm_hands_a_long_job_back_after_the_shutdown_grace(cluster: Cluster) -> None:
    """Warm shutdown waits SHUTDOWN_GRACE for running jobs, then returns them to the queue without
    spending an attempt; the sweeper publishes them again and another worker runs them."""
    leaving = cluster.started_worker(1, shutdown_grace=1)
    api = cluster.api(sweep_interval=0.5)
    with api.client() as client:
        job_id = submit(client, processor="sleep", params={"seconds": 30, "steps": 300})["id"]
        wait_for(client, job_id, lambda job: job["status"] == "running" and job["progress"] > 0, timeout=30)
        leaving.terminate()
        assert leaving.wait(timeout=30) == 0, leaving.log_tail()
        job = cluster.job(job_id)
        assert (job.status, job.attempts, job.message) == ("queued", 0, "returned to the queue at shutdown")

        cluster.started_worker(1)
        wait_for(client, job_id, lambda job: job["status"] == "running", timeout=30)
    job = cluster.job(job_id)
    assert job.attempts == 1
    assert [line[0] for line in cluster.running_lines()].count(job_id) == 2


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_small_inspect_jobs_run_in_the_pool_process_and_large_ones_in_a_child(cluster: Cluster) -> None:
    """A light processor on an input within INLINE_MAX_BYTES runs in the pool process's task
    thread: no processor child is started until a job above the limit needs one. Results as ever."""
    worker = cluster.started_worker(1, inline_max_bytes=4096)
    api = cluster.api()
    contents = [b"small text\nof two lines\n", bytes(range(256)) * 16, b"x" * 5000]
    with api.client() as client:
        small = [submit(client, content)["id"] for content in contents[:2]]
        rows = cluster.wait_jobs(small, timeout=60)
        assert worker.processor_children() == []  # both ran inline
        large = submit(client, contents[2])["id"]
        rows |= cluster.wait_jobs([large], timeout=60)
    assert len(worker.processor_children()) == 1  # the large one needed a child
    for job_id, content in zip([*small, large], contents, strict=True):
        job = rows[job_id]
        assert job.status == "succeeded", (job.status, job.error_code, job.error_message)
        assert job.result is not None
        assert job.result["size"] == len(content)
        assert job.result["sha256"] == hashlib.sha256(content).hexdigest()
        assert job.result["md5"] == hashlib.md5(content).hexdigest()
    assert rows[small[0]].result == {
        **rows[small[0]].result,
        "is_text": True,
        "lines": 2,
        "words": 5,
    }


def _database_sockets(pid: int, port: int) -> int:
    """How many TCP connections process ``pid`` has open to the database's port."""
    sockets = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for s in sockets if s.raddr and s.raddr.port == port and s.status == psutil.CONN_ESTABLISHED)


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_a_pool_process_is_ready_before_its_first_job(cluster: Cluster) -> None:
    """A pool process makes its runtime and opens its two database connections (the claim's and
    the finish's) when it starts, not on its first job; the main process imported what they need
    before forking and connected nothing (a socket it forked would be shared by every pool process)."""
    port = make_url(cluster.database_url).port or 5432
    worker = cluster.started_worker(1)
    [pool] = wait_until(worker.pool_pids, timeout=30, what="the pool process")
    wait_until(lambda: _database_sockets(pool, port) >= 2, timeout=30, what="the pool's connections")
    assert _database_sockets(worker.pid, port) == 0
    api = cluster.api()
    with api.client() as client:
        job_id = submit(client, b"ready\n")["id"]
    job = cluster.wait_jobs([job_id], timeout=60)[job_id]
    assert job.status == "succeeded", (job.status, job.error_code, job.error_message)
    assert _database_sockets(pool, port) == 2  # the job used them: no third was opened
