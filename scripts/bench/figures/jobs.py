"""End-to-end jobs per second for trivial work, against the rate at which the same jobs were accepted.

filejobs runs with its default local workers (one per CPU). Each round, N small text files are
submitted as ``inspect`` jobs as fast as the API takes them, by 16 Python threads each holding one
keep-alive connection (``http.client``: light, so the client takes little CPU from the server).
From the same run:

* accept rate = N / (last 202 - first request sent), on the client's clock;
* jobs/s = N / (last ``finished_at`` of the N jobs - first request sent): ``finished_at`` is the
  server's timestamp of the commit that made each job ``succeeded`` (same machine, same wall clock).

"All succeeded" is detected without polling in a loop: a long-poll (``?wait=``) on the last job
submitted, then one ``GET /v1/jobs?status=succeeded`` walk over the new jobs, then a long-poll on
each job still missing, all under one deadline. Any job that did not succeed fails the figure.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import httpx

from scripts.bench.common import Context, filejobs_server
from scripts.bench.figures.filejobs_load import (
    KeepAlive,
    filejobs_env,
    iter_jobs,
    median,
    parse_time,
    small_body,
    wait_finished,
)
from scripts.bench.report import Figure

UPLOADERS = 16
DEADLINE_S = 600.0


@dataclass
class Run:
    """One round: N jobs submitted, accepted and run."""

    jobs: int
    accept_per_s: float
    jobs_per_s: float
    submit_s: float  # first request -> last 202
    drain_s: float  # last 202 -> last job finished


def submit_all(base_url: str, count: int) -> tuple[list[str], float, float, float]:
    """Submit ``count`` 1 KiB ``inspect`` jobs from :data:`UPLOADERS` threads; (ids in submit order,
    wall-clock time of the first request, perf_counter of the first request, of the last 202)."""
    body = small_body(1024)
    payload, headers = body.whole(), {"Content-Type": body.content_type}
    shares = [count // UPLOADERS + (1 if i < count % UPLOADERS else 0) for i in range(UPLOADERS)]
    ids: list[list[tuple[float, str]]] = [[] for _ in shares]
    errors: list[BaseException] = []
    start = threading.Barrier(UPLOADERS + 1)

    def upload(index: int) -> None:
        """One uploader: its share of the jobs, one after the other on one connection."""
        try:
            with KeepAlive(base_url) as conn:
                conn.request("GET", "/healthz")  # connect before the clock starts
                start.wait()
                for _ in range(shares[index]):
                    job = conn.post_json("/v1/jobs", payload, headers)
                    ids[index].append((time.perf_counter(), job["id"]))
        except BaseException as exc:
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=upload, args=(i,), name=f"uploader-{i}") for i in range(UPLOADERS)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # an uploader failed: reported below
        start.wait()
    first_wall, first = time.time(), time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} uploader(s) failed; first: {errors[0]!r}")
    accepted = sorted(pair for share in ids for pair in share)
    return [job_id for _, job_id in accepted], first_wall, first, accepted[-1][0]


def last_finished(base_url: str, ids: list[str]) -> float:
    """Wait (under :data:`DEADLINE_S`) until every job in ``ids`` succeeded; the latest ``finished_at``
    among them, in seconds since the epoch. RuntimeError if any did not succeed."""
    deadline = time.monotonic() + DEADLINE_S
    wanted = set(ids)
    finished: dict[str, float] = {}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        wait_finished(client, ids[-1], timeout=DEADLINE_S)
        oldest = min(ids)
        for job in iter_jobs(client, status="succeeded"):
            if job["id"] < oldest:
                break  # newest first: the rest are older rounds' jobs
            if job["id"] in wanted:
                finished[job["id"]] = parse_time(job["finished_at"])
        for job_id in wanted - finished.keys():
            job = wait_finished(client, job_id, timeout=max(1.0, deadline - time.monotonic()))
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
            finished[job_id] = parse_time(job["finished_at"])
    return max(finished.values())


def one_round(base_url: str, count: int) -> Run:
    """Submit ``count`` jobs, wait for all of them; the accept rate and the end-to-end rate."""
    ids, first_wall, first, last_202 = submit_all(base_url, count)
    done_wall = last_finished(base_url, ids)
    submit_s = last_202 - first
    total_s = done_wall - first_wall
    return Run(
        jobs=count,
        accept_per_s=count / submit_s,
        jobs_per_s=count / total_s,
        submit_s=submit_s,
        drain_s=total_s - submit_s,
    )


def run(ctx: Context) -> list[Figure]:
    """``ctx.rounds`` rounds of N trivial jobs on one filejobs server; medians of both rates."""
    count = 20 if ctx.smoke else 1000
    runs: list[Run] = []
    with filejobs_server(ctx.subdir("jobs") / "filejobs", filejobs_env(), scalable=True) as server:
        one_round(server.base_url, min(count, 50))  # warm up: worker children, imports, caches
        for round_no in range(ctx.rounds):
            got = one_round(server.base_url, count)
            runs.append(got)
            ctx.say(
                f"   round {round_no + 1}: {got.jobs} jobs, accepted {got.accept_per_s:6.0f}/s "
                f"in {got.submit_s:.1f} s, all succeeded {got.drain_s:.1f} s later: "
                f"{got.jobs_per_s:6.0f} jobs/s"
            )
    jobs_per_s = median(r.jobs_per_s for r in runs)
    accept = median(r.accept_per_s for r in runs)
    return [
        Figure(
            key="jobs_trivial_per_s",
            label=f"trivial jobs/s end to end ({count} inspect jobs)",
            unit="jobs/s",
            value=jobs_per_s,
            baselines={"accept rate": accept},
            target=">= 0.8x accept rate",
            met=None if ctx.smoke else jobs_per_s >= 0.8 * accept,
            note=(
                f"default workers (one per CPU); {UPLOADERS} uploader threads with keep-alive "
                "connections; jobs/s = N / (last finished_at - first request), accept rate = "
                f"N / (last 202 - first request); median drain after the last 202 "
                f"{median(r.drain_s for r in runs):.1f} s"
            ),
        )
    ]
