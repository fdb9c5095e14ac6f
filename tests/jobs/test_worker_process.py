"""The local pool in a process of its own (``FILEJOBS_WORKER_PROCESS``, jobs/worker_process.py):
it runs what the API process sends it, its changes wake the API process, a cancelled job stops,
and it is started again when it dies alone."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs.worker_process import WorkerProcess
from filejobs.services import Services
from filejobs.testing import submit
from tests.conftest import make_settings
from tests.jobs.helpers import process_gone, row, wait_for_status, wait_until


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    """An app whose one worker runs in a worker process; the change feed polls only hourly, so
    only the worker process's notices can wake the API process soon."""
    settings = make_settings(data_dir, workers=1, worker_process=True, events_poll_interval=3600.0)
    with TestClient(create_app(settings)) as client:
        yield client


def worker_process(client: TestClient) -> WorkerProcess:
    services: Services = client.app_state["services"]
    assert services.worker is None  # no pool threads in the API process
    assert isinstance(services.dispatcher, WorkerProcess)
    return services.dispatcher


def test_jobs_run_in_the_worker_process_and_its_changes_wake_the_api(client: TestClient) -> None:
    services: Services = client.app_state["services"]
    pool = worker_process(client)
    heard: list[str] = []
    lock = threading.Lock()

    def record(job_id: str) -> None:
        with lock:
            heard.append(job_id)

    services.hub.listen(record)
    job_id = submit(client, processor="where")["id"]  # light: runs in the worker's own thread
    job = wait_for_status(services.db, job_id, "succeeded", "failed")
    assert job.status == "succeeded", job.error
    assert job.result == {"pid": pool.pid, "size": 12}
    assert pool.pid != os.getpid()
    # The API process's own notice at dispatch, then the worker process's: running, succeeded.
    wait_until(lambda: heard.count(job_id) >= 3 or None, timeout=15, what="the worker process's notices")
    assert client.get("/readyz").status_code == 200


def test_a_cancelled_job_in_the_worker_process_stops(client: TestClient) -> None:
    services: Services = client.app_state["services"]
    stubborn = submit(client, processor="sleep", params={"seconds": 30, "steps": 1})["id"]
    wait_for_status(services.db, stubborn, "running")
    assert client.post(f"/v1/jobs/{stubborn}/cancel").status_code == 200
    after = submit(client, processor="where")["id"]  # the one worker is free only after the cancel
    assert wait_for_status(services.db, after, "succeeded", "failed").status == "succeeded"
    assert row(services.db, stubborn).status == "cancelled"


def test_a_worker_process_that_dies_alone_is_started_again(client: TestClient) -> None:
    services: Services = client.app_state["services"]
    pool = worker_process(client)
    first = pool.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: process_gone(first) or None, timeout=10, what="the worker process to die")
    second = wait_until(
        lambda: pool.pid if pool.pid not in (None, first) else None, timeout=15, what="another worker process"
    )
    job_id = submit(client, processor="where")["id"]
    job = wait_for_status(services.db, job_id, "succeeded", "failed")
    assert job.status == "succeeded"
    assert job.result is not None
    assert job.result["pid"] == second


def test_closing_stops_the_worker_process(data_dir: Path) -> None:
    """The app's shutdown closes the pipe: the worker process stops and is not started again."""
    settings = make_settings(data_dir, workers=1, worker_process=True)
    with TestClient(create_app(settings)) as client:
        pid = worker_process(client).pid
    assert pid is not None
    assert process_gone(pid)


def test_a_stalled_worker_process_never_blocks_the_api_process(client: TestClient) -> None:
    """submit runs on the event loop: with the worker process stopped (SIGSTOP) and its pipe full,
    ids are dropped (left queued for the sweeper), never waited for."""
    pool = worker_process(client)
    pid = pool.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        sent = threading.Thread(target=lambda: [pool.submit(f"01-stalled-{n:05d}") for n in range(4000)])
        sent.start()
        sent.join(timeout=30)
        assert not sent.is_alive(), "submit blocked on the stalled worker process's pipe"
        assert pool.dropped > 0  # 4,000 lines do not fit in a pipe (64 KiB)
    finally:
        os.kill(pid, signal.SIGKILL)  # a stopped process dies of it: another is started
    wait_until(lambda: process_gone(pid) or None, timeout=10, what="the stalled worker process to die")
