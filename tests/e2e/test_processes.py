"""``filejobs serve --processes N``: several HTTP processes on one port, one database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from filejobs.testing import Server, status_is, wait_for, wait_gone, wait_until

pytestmark = pytest.mark.e2e


def http_processes(server: Server) -> list[psutil.Process]:
    """The supervisor's HTTP processes (uvicorn's spawned workers), not job worker children."""
    return [
        child
        for child in psutil.Process(server.pid).children(recursive=False)
        if "spawn_main" in " ".join(child.cmdline())
    ]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with Server(
        tmp_path / "data", env={"FILEJOBS_WORKERS": "2"}, args=["--processes", "2", "--log-level", "info"]
    ) as started:
        yield started


def test_two_processes_share_the_jobs_and_the_workers(server: Server) -> None:
    processes = http_processes(server)
    assert len(processes) == 2
    contents = [f"file {n}\n".encode() for n in range(12)]
    with server.client() as client:
        ids = []
        for content in contents:  # new connections: the kernel spreads them over both processes
            with httpx.Client(base_url=server.base_url, timeout=30) as fresh:
                response = fresh.post("/v1/jobs", files={"file": ("f.txt", content)})
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        for job_id, content in zip(ids, contents, strict=True):
            job = wait_for(client, job_id, status_is("succeeded", "failed"), timeout=60)
            assert job["status"] == "succeeded", job
            assert job["result"]["sha256"] == hashlib.sha256(content).hexdigest()
        listed = client.get("/v1/jobs", params={"limit": 50}).json()["items"]
        assert {job["id"] for job in listed} == set(ids)  # every process sees every job
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "filejobs_jobs" in metrics.text

    # WORKERS=2 shared out: one job process under each HTTP process, not two each. A worker thread
    # starts its child when its process has started, which under load can be after the kernel gave
    # every upload to the other process: wait until each process has one, then count them all.
    def children(proc: psutil.Process) -> list[psutil.Process]:
        return [p for p in proc.children(recursive=True) if "filejobs.jobs.child" in " ".join(p.cmdline())]

    wait_until(
        lambda: all(children(proc) for proc in processes), timeout=60, what="a job child in each process"
    )
    assert [len(children(proc)) for proc in processes] == [1, 1]


def test_the_http_processes_stop_when_the_supervisor_is_killed(server: Server) -> None:
    processes = http_processes(server)
    assert len(processes) == 2
    server.kill9()
    assert wait_gone(processes, timeout=20.0) == []  # not left serving on the port


def test_the_worker_process_runs_the_jobs_counts_them_and_stops_with_its_killed_api_process(
    tmp_path: Path,
) -> None:
    """``FILEJOBS_WORKER_PROCESS``: the jobs run in a process of its own beside the API process, its
    counters reach the API's /metrics, and it stops when the API process is killed (its pipe's EOF)."""
    env = {"FILEJOBS_WORKERS": "1", "FILEJOBS_WORKER_PROCESS": "true"}
    with Server(tmp_path / "data", env=env) as server, server.client() as client:
        pools = [p for p in server.children() if "filejobs.jobs.worker_process" in p.cmdline()]
        assert len(pools) == 1
        job_id = client.post("/v1/jobs", files={"file": ("f.txt", b"hello\n")}).json()["id"]
        assert wait_for(client, job_id, status_is("succeeded", "failed"), timeout=60)["status"] == "succeeded"
        # No job child under the API process itself: the one worker's child is the worker process's.
        assert not [p for p in psutil.Process(server.pid).children() if "filejobs.jobs.child" in p.cmdline()]
        finished = 'filejobs_jobs_finished_total{processor="inspect",status="succeeded"} 1.0'
        assert finished in client.get("/metrics").text
        server.kill9()
        assert wait_gone(pools, timeout=20.0) == []
