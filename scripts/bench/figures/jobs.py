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

Where the floor is, from the same run (the second figure): the CPU one job costs, all processes
together (the server, its job children and this process's uploader threads; psutil, first request
-> all succeeded, less what the check that all succeeded cost, measured by doing it again), against
the CPU the machine has per job if N jobs are to finish within N / (0.8 x accept rate): its cores x
that time / N. More CPU per job than that budget means 0.8x cannot be reached on this machine
whatever the scheduling. The accept path's own share is measured on a second server that runs no
jobs (``FILEJOBS_WORKERS=0``), its rounds alternating with the first's: the same uploads, its CPU
per job the same way; the processing's share is the difference.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import psutil

from scripts.bench.common import Context, filejobs_server, tree
from scripts.bench.figures.filejobs_load import (
    KeepAlive,
    cpu_seconds,
    cpu_used,
    filejobs_env,
    iter_jobs,
    median,
    parse_time,
    small_body,
    wait_finished,
)
from scripts.bench.report import Figure

UPLOADERS = 16
#: The resolution of a process's CPU time (``/proc``): no difference is measured below it.
TICK = 1 / os.sysconf("SC_CLK_TCK")
DEADLINE_S = 600.0


@dataclass
class Run:
    """One round: N jobs submitted, accepted and run."""

    jobs: int
    accept_per_s: float
    jobs_per_s: float
    submit_s: float  # first request -> last 202
    drain_s: float  # last 202 -> last job finished
    cpu_s: float = 0.0  # CPU of the server, its children and this process over the round
    api_cpu_s: float = 0.0  # of which the API process(es): one GIL each
    child_cpu_s: float = 0.0  # of which the job children
    pool_cpu_s: float = 0.0  # of which the worker processes (FILEJOBS_WORKER_PROCESS), not the API's
    others_busy: float = 0.0  # cores other processes of the machine kept busy meanwhile (on average)

    @property
    def cpu_per_job_us(self) -> float:
        return self.cpu_s / self.jobs * 1e6

    @property
    def api_per_job_us(self) -> float:
        return self.api_cpu_s / self.jobs * 1e6

    @property
    def busy_cores(self) -> float:
        """The round's CPU over its wall time: how many cores it kept busy on average."""
        return self.cpu_s / (self.jobs / self.jobs_per_s)


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


def cpu_meter(server_pid: int | None) -> Callable[[], dict[int, float]]:
    """A reading of the CPU used so far by the server (with its children) and this process
    (the uploader threads), by pid; only this process's when ``server_pid`` is None."""
    me = psutil.Process()

    def read() -> dict[int, float]:
        return cpu_seconds([*(tree(server_pid) if server_pid is not None else []), me])

    return read


def job_children(server_pid: int | None, module: str = "filejobs.jobs.child") -> set[int]:
    """The pids of the server's job children (``python -m filejobs.jobs.child``), or of its
    processes of another ``module`` (``filejobs.jobs.worker_process``)."""
    found = set()
    for proc in tree(server_pid) if server_pid is not None else []:
        with contextlib.suppress(psutil.Error):
            if module in proc.cmdline():
                found.add(proc.pid)
    return found


def api_processes(server_pid: int) -> int:
    """How many API processes the server runs: its ``--processes`` spawned children, else itself."""
    spawned = 0
    for proc in tree(server_pid):
        with contextlib.suppress(psutil.Error):
            spawned += any("spawn_main" in part for part in proc.cmdline())
    return spawned or 1


def split_cpu(
    before: dict[int, float], after: dict[int, float], children: set[int], pools: frozenset[int] = frozenset()
) -> tuple[float, float]:
    """CPU seconds between two readings of (the API processes: neither this one nor a job
    child nor a worker process (``pools``), the job children)."""
    me = os.getpid()
    api = {pid: s for pid, s in after.items() if pid != me and pid not in children and pid not in pools}
    kids = {pid: s for pid, s in after.items() if pid in children}
    return cpu_used(before, api), cpu_used(before, kids)


def one_round(base_url: str, count: int, server_pid: int | None = None) -> Run:
    """Submit ``count`` jobs, wait for all of them; the accept rate and the end-to-end rate, and
    the CPU the round cost (:func:`cpu_meter`; the check that all succeeded is done a second time
    and its CPU taken off: it is the benchmark's, not the jobs')."""
    meter = cpu_meter(server_pid)
    machine_before, started = machine_busy(), time.monotonic()
    before = meter()
    ids, first_wall, first, last_202 = submit_all(base_url, count)
    done_wall = last_finished(base_url, ids)
    after = meter()
    machine_used, elapsed = machine_busy() - machine_before, time.monotonic() - started
    last_finished(base_url, ids)
    checked = meter()
    check = cpu_used(after, checked)
    children = job_children(server_pid)
    pools = frozenset(job_children(server_pid, "filejobs.jobs.worker_process"))
    api_s, child_s = split_cpu(before, after, children, pools)
    api_check, _ = split_cpu(after, checked, children, pools)
    pool_s = cpu_used(before, {pid: s for pid, s in after.items() if pid in pools})
    submit_s = last_202 - first
    total_s = done_wall - first_wall
    return Run(
        jobs=count,
        accept_per_s=count / submit_s,
        jobs_per_s=count / total_s,
        submit_s=submit_s,
        drain_s=total_s - submit_s,
        cpu_s=max(TICK, cpu_used(before, after) - check),
        api_cpu_s=max(TICK, api_s - api_check),
        child_cpu_s=child_s,
        pool_cpu_s=pool_s,
        others_busy=max(0.0, machine_used - cpu_used(before, after)) / elapsed,
    )


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (not idle, not waiting for I/O), all cores."""
    times = psutil.cpu_times()
    return (
        sum(times)
        - times.idle
        - getattr(times, "iowait", 0.0)
        - getattr(times, "guest", 0.0)
        - getattr(times, "guest_nice", 0.0)
    )


def accept_round(base_url: str, count: int, server_pid: int) -> Run:
    """Submit ``count`` jobs to a server that runs none: the accept path's rate and CPU alone."""
    meter = cpu_meter(server_pid)
    before = meter()
    _ids, _wall, first, last_202 = submit_all(base_url, count)
    submit_s = last_202 - first
    after = meter()
    api_s, _ = split_cpu(before, after, set())
    used = max(TICK, cpu_used(before, after))
    return Run(count, count / submit_s, count / submit_s, submit_s, 0.0, used, max(TICK, api_s))


def run(ctx: Context) -> list[Figure]:
    """``ctx.rounds`` rounds of N trivial jobs on one filejobs server, each followed by a round of
    the same uploads on a server that runs no jobs; medians of both rates, and of the CPU per job."""
    count = 20 if ctx.smoke else 1000
    runs: list[Run] = []
    accepts: list[Run] = []
    work = ctx.subdir("jobs")
    with (
        filejobs_server(work / "filejobs", filejobs_env(), scalable=True) as server,
        filejobs_server(work / "accept-only", filejobs_env(FILEJOBS_WORKERS="0"), scalable=True) as idle,
    ):
        one_round(server.base_url, min(count, 50))  # warm up: worker children, imports, caches
        accept_round(idle.base_url, min(count, 50), idle.pid)
        processes = api_processes(server.pid)
        for round_no in range(ctx.rounds):
            got = one_round(server.base_url, count, server.pid)
            runs.append(got)
            alone = accept_round(idle.base_url, count, idle.pid)
            accepts.append(alone)
            ctx.say(
                f"   round {round_no + 1}: {got.jobs} jobs, accepted {got.accept_per_s:6.0f}/s "
                f"in {got.submit_s:.1f} s, all succeeded {got.drain_s:.1f} s later: "
                f"{got.jobs_per_s:6.0f} jobs/s; CPU {got.cpu_per_job_us:5.0f} µs/job "
                f"(API process {got.api_per_job_us:5.0f}, job children "
                f"{got.child_cpu_s / count * 1e6:4.0f}, worker process {got.pool_cpu_s / count * 1e6:4.0f}; "
                f"{got.busy_cores:.2f} cores busy)"
            )
            ctx.say(
                f"      no workers: accepted {alone.accept_per_s:6.0f}/s, CPU {alone.cpu_per_job_us:5.0f} "
                f"µs/job (API process {alone.api_per_job_us:5.0f})"
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
        ),
        *floor_figures(ctx, runs, accepts, processes),
    ]


def floor_figures(ctx: Context, runs: list[Run], accepts: list[Run], processes: int) -> list[Figure]:
    """The CPU a job costs against the CPU there is for it if N jobs are to finish within
    N / (0.8 x accept rate): all processes against the machine's cores, and the API processes
    (``processes`` of them, each one's Python under one GIL: about one core) against as many cores."""
    cores = len(os.sched_getaffinity(0))
    accept = median(r.accept_per_s for r in runs)
    per_job = median(r.cpu_per_job_us for r in runs)
    api = median(r.api_per_job_us for r in runs)
    accepting, accepting_api = (
        median(r.cpu_per_job_us for r in accepts),
        median(r.api_per_job_us for r in accepts),
    )
    # What other processes of the machine used meanwhile is not there for these jobs (the machine
    # may be shared: the figure then says what this machine had, not what an idle one has).
    others = median(r.others_busy for r in runs)
    free = max(cores - others, 0.1)
    core_budget = 1e6 / (0.8 * accept)  # µs of one core per job if N jobs finish in N / (0.8 x accept)
    budget = free * core_budget
    api_budget = min(free, processes) * core_budget
    return [
        Figure(
            key="jobs_trivial_cpu_per_job_us",
            label="CPU per trivial job, all processes (accept + run)",
            unit="µs",
            value=per_job,
            baselines={"CPU budget at 0.8x accept": budget},
            target="<= budget (above it 0.8x is beyond this machine)",
            met=None if ctx.smoke else per_job <= budget,
            note=(
                f"budget = ({cores} cores - {others:.2f} kept busy by other processes meanwhile) / (0.8 x "
                f"accept rate {accept:.0f}/s); the accept path alone (no workers, the same uploads) "
                f"{accepting:.0f} µs/job, so processing {per_job - accepting:.0f} µs/job against "
                f"{budget - accepting:.0f} µs left for it at 0.8x ({free / accept * 1e6 - accepting:.0f} at "
                f"1.0x); the rounds kept {median(r.busy_cores for r in runs):.2f} cores busy"
            ),
        ),
        Figure(
            key="jobs_trivial_api_cpu_per_job_us",
            label="CPU per trivial job, the API process (one GIL each)",
            unit="µs",
            value=api,
            baselines={"budget of one core each at 0.8x accept": api_budget},
            target="<= budget (each one's Python runs on about one core)",
            met=None if ctx.smoke else api <= api_budget,
            note=(
                f"{processes} API process(es); budget = {min(free, processes):.2f} core(s) / (0.8 x "
                f"accept rate {accept:.0f}/s); the API process holds the event loop, the group committer "
                f"and the worker threads; without workers it spends {accepting_api:.0f} µs/job accepting, so "
                f"{api - accepting_api:.0f} µs/job of it runs jobs (claim, child round trip, final status) "
                f"against {api_budget - accepting_api:.0f} µs left for it at 0.8x"
            ),
        ),
    ]
