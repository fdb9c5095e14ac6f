"""A restarted service takes back the running jobs of a dead worker process on its host at once."""

from __future__ import annotations

import socket
import subprocess
import sys

from fastapi.testclient import TestClient

from filejobs.jobs import repository
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.sweeper import sweep
from filejobs.services import Services
from filejobs.testing import post_file


def _claim_as(services: Services, job_id: str, pid: int) -> None:
    owner = f"{socket.gethostname()}:{pid}:abcdef:0"
    # A long lease: only the dead-owner check can take this job back.
    assert repository.claim_job(services.db, job_id, owner=owner, lease_seconds=3600) is not None


def test_job_of_a_dead_local_process_is_requeued_without_waiting_for_its_lease(
    client: TestClient, services: Services, dispatcher: InMemoryDispatcher
) -> None:
    job_id = post_file(client).json()["id"]
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _claim_as(services, job_id, int(gone.stdout))
    dispatcher.submitted.clear()

    report = sweep(
        db=services.db, storage=services.storage, settings=services.settings, dispatcher=dispatcher
    )

    assert report.requeued == 1
    job = repository.get_job(services.db, job_id)
    assert job is not None
    assert job.status == "queued"
    assert job.error_code == "worker_lost"
    assert dispatcher.submitted == [job_id]


def test_job_of_a_live_process_keeps_its_lease(
    client: TestClient, services: Services, dispatcher: InMemoryDispatcher
) -> None:
    job_id = post_file(client).json()["id"]
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        _claim_as(services, job_id, alive.pid)
        report = sweep(
            db=services.db, storage=services.storage, settings=services.settings, dispatcher=dispatcher
        )
        assert report.requeued == 0
        job = repository.get_job(services.db, job_id)
        assert job is not None
        assert job.status == "running"
    finally:
        alive.kill()
        alive.wait()


def test_job_owned_by_another_host_waits_for_its_lease(
    client: TestClient, services: Services, dispatcher: InMemoryDispatcher
) -> None:
    job_id = post_file(client).json()["id"]
    owner = "some-other-host:1:abcdef:0"
    assert repository.claim_job(services.db, job_id, owner=owner, lease_seconds=3600) is not None
    report = sweep(
        db=services.db, storage=services.storage, settings=services.settings, dispatcher=dispatcher
    )
    assert report.requeued == 0


def test_a_killed_process_not_yet_reaped_counts_as_dead() -> None:
    """A zombie (killed, its parent has not waited for it) still answers ``kill(pid, 0)``."""
    import os
    import signal

    from filejobs.jobs.liveness import owner_is_dead_here
    from tests.jobs.helpers import wait_until

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = f"{socket.gethostname()}:{proc.pid}:abcdef:0"
    try:
        assert not owner_is_dead_here(owner)
        os.kill(proc.pid, signal.SIGKILL)

        def zombie() -> bool:
            with open(f"/proc/{proc.pid}/stat") as stat:
                return stat.read().rpartition(")")[2].split()[0] == "Z"

        wait_until(zombie, what="the killed child to become a zombie")
        os.kill(proc.pid, 0)  # still "exists"
        assert owner_is_dead_here(owner)
    finally:
        proc.kill()
        proc.wait()
