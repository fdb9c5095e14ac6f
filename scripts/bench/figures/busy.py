"""Status latency while both cores run CPU-heavy jobs, against the same polls with idle workers.

filejobs runs with its default local workers (one per CPU, each job in its worker's child
process). The heavy work is the built-in ``thumbnail`` processor making a 4096 px PNG out of a
7900 x 7900 PNG (a gradient: under 1 MiB to upload, seconds of CPU to decode, resize and encode).

Each round:

1. idle: status polls of one small succeeded job at a fixed rate (:data:`RATE` per second, from
   :data:`POLLERS` threads each with one keep-alive httpx client, on a schedule: not saturation,
   which would measure queueing) for the measurement time; p50 and p99 of the poll latency;
2. busy: enough heavy jobs are submitted *before* the measurement to keep both workers busy
   through it (sized from a calibration job's run time), so no upload runs meanwhile; once two
   are running, the same polls are measured while psutil samples the CPU time of the worker
   children (reported in the note: it must be about 2 cores) and of the API process. The queue
   must still hold a job at the end, else the figure fails (the cores were not busy throughout).
   Then every heavy job left is cancelled and waited for.
"""

from __future__ import annotations

import io
import math
import threading
import time
from dataclasses import dataclass

import httpx
import psutil
from PIL import Image

from filejobs.testing import Server
from scripts.bench.common import Context, filejobs_server
from scripts.bench.figures.filejobs_load import (
    cpu_seconds,
    cpu_used,
    filejobs_env,
    iter_jobs,
    median,
    parse_time,
    percentile,
    small_body,
    submit,
    wait_finished,
)
from scripts.bench.report import Figure

RATE = 50.0  # status polls per second, in all
POLLERS = 4
HEAVY_PARAMS = '{"size": 4096, "format": "png"}'
TARGET_P99_MS = 20.0
#: Busy means this many cores of worker-child CPU, at least (2 workers on 2 cores: about 2).
BUSY_CORES = 1.6


@dataclass
class Polls:
    """Latencies (ms) of one fixed-rate poll measurement, and the CPU used meanwhile."""

    latencies_ms: list[float]
    seconds: float
    worker_cores: float  # CPU seconds of the worker children / wall seconds
    api_cores: float  # the same for the API process (its threads included)
    machine_cores: float  # cores busy on the whole machine (other work included)

    @property
    def p50(self) -> float:
        """Median poll latency (ms)."""
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        """99th percentile poll latency (ms)."""
        return percentile(self.latencies_ms, 99)


def heavy_image(edge: int) -> bytes:
    """A PNG of ``edge`` x ``edge`` RGB gradients: small on the wire, heavy to decode and scale."""
    ramp = Image.linear_gradient("L").resize((edge, edge))
    rgb = Image.merge(
        "RGB", (ramp, ramp.transpose(Image.Transpose.ROTATE_90), ramp.transpose(Image.Transpose.ROTATE_180))
    )
    out = io.BytesIO()
    rgb.save(out, "PNG", compress_level=1)
    return out.getvalue()


def idle_seconds() -> float:
    """Idle CPU seconds of the whole machine so far (all cores)."""
    times = psutil.cpu_times()
    return float(times.idle + getattr(times, "iowait", 0.0))


def poll_at_rate(server: Server, job_id: str, seconds: float) -> Polls:
    """GET ``/v1/jobs/{job_id}`` :data:`RATE` times a second for ``seconds`` from :data:`POLLERS`
    threads (each on its own schedule, staggered); latency from send to the body read."""
    interval = POLLERS / RATE
    per_thread = max(1, int(seconds / interval))
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(POLLERS + 1)
    t0 = 0.0

    def poller(index: int) -> None:
        """One poller thread: its polls on its own staggered schedule."""
        mine: list[float] = []
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            client.get(f"/v1/jobs/{job_id}")  # connect before the clock starts
            start.wait()
            for k in range(per_thread):
                due = t0 + (k + index / POLLERS) * interval
                time.sleep(max(0.0, due - time.perf_counter()))
                sent = time.perf_counter()
                response = client.get(f"/v1/jobs/{job_id}")
                mine.append((time.perf_counter() - sent) * 1000)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    break
        with lock:
            latencies.extend(mine)

    api = [psutil.Process(server.pid)]
    threads = [threading.Thread(target=poller, args=(i,), name=f"poller-{i}") for i in range(POLLERS)]
    for thread in threads:
        thread.start()
    t0 = time.perf_counter() + 0.05
    cpu_children, cpu_api, idle = cpu_seconds(server.children()), cpu_seconds(api), idle_seconds()
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} status poll(s) failed; first: {errors[0]}")
    return Polls(
        latencies_ms=latencies,
        seconds=wall,
        worker_cores=cpu_used(cpu_children, cpu_seconds(server.children())) / wall,
        api_cores=cpu_used(cpu_api, cpu_seconds(api)) / wall,
        machine_cores=(psutil.cpu_count() or 1) - (idle_seconds() - idle) / wall,
    )


def calibrate(client: httpx.Client, image: bytes) -> float:
    """Run one heavy job alone; its run time (started_at to finished_at) in seconds."""
    job = wait_finished(client, submit(client, image, "heavy.png", "thumbnail", HEAVY_PARAMS), timeout=300)
    if job["status"] != "succeeded":
        raise RuntimeError(f"the heavy job ended {job['status']}: {job.get('error')}")
    return parse_time(job["finished_at"]) - parse_time(job["started_at"])


def running(client: httpx.Client) -> int:
    """How many jobs are running now."""
    return sum(1 for _ in iter_jobs(client, status="running"))


def busy_polls(
    server: Server, client: httpx.Client, job_id: str, image: bytes, jobs: int, seconds: float
) -> Polls:
    """Queue ``jobs`` heavy jobs, wait until two run, measure the polls, check the queue never
    emptied; cancel and wait for every heavy job left, whatever happened."""
    heavy: list[str] = []
    try:
        for index in range(jobs):
            heavy.append(submit(client, image, f"heavy-{index}.png", "thumbnail", HEAVY_PARAMS))
        deadline = time.monotonic() + 60
        while running(client) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("two heavy jobs were not running within 60 s")
            time.sleep(0.05)
        polls = poll_at_rate(server, job_id, seconds)
        left = [j for j in heavy if client.get(f"/v1/jobs/{j}").json()["status"] == "queued"]
        if not left:
            raise RuntimeError(
                f"the {jobs} heavy jobs ran out before the measurement ended: not busy throughout"
            )
        return polls
    finally:
        for job in heavy:
            client.post(f"/v1/jobs/{job}/cancel")  # 409 once finished: fine
        for job in heavy:
            wait_finished(client, job, timeout=120)


def run(ctx: Context) -> list[Figure]:
    """Alternate idle and busy poll measurements on one filejobs server; medians of p50 and p99."""
    seconds = 2.0 if ctx.smoke else 10.0
    image = heavy_image(3000 if ctx.smoke else 7900)
    idle: list[Polls] = []
    busy: list[Polls] = []
    server = filejobs_server(ctx.subdir("busy") / "filejobs", filejobs_env(FILEJOBS_CANCEL_GRACE="1"))
    with server, server.client() as client:
        job_id = submit(client, small_body().block, "polled.txt")
        if wait_finished(client, job_id, timeout=60)["status"] != "succeeded":
            raise RuntimeError("the polled job did not succeed")
        job_s = calibrate(client, image)
        # As if each ran as fast as alone (two at once only go slower): the queue outlasts the
        # measurement and the wait for two to run; what is left is cancelled.
        jobs = 2 * math.ceil((seconds + 5) / job_s) + 2
        ctx.say(f"   heavy job: {job_s:.1f} s alone; {jobs} queued per busy measurement")
        poll_at_rate(server, job_id, 1.0)  # warm up
        for round_no in range(ctx.rounds):
            idle.append(poll_at_rate(server, job_id, seconds))
            busy.append(busy_polls(server, client, job_id, image, jobs, seconds))
            for name, got in (("idle", idle[-1]), ("busy", busy[-1])):
                ctx.say(
                    f"   round {round_no + 1} {name}: p50 {got.p50:5.1f} ms  p99 {got.p99:5.1f} ms  "
                    f"({len(got.latencies_ms)} polls; workers {got.worker_cores:.2f} cores, "
                    f"API {got.api_cores:.2f}, machine {got.machine_cores:.2f})"
                )
        if not ctx.smoke:
            thin = [b.worker_cores for b in busy if b.worker_cores < BUSY_CORES]
            if thin:
                raise RuntimeError(
                    f"workers used only {min(thin):.2f} cores while 'busy' (want >= {BUSY_CORES}; "
                    f"machine busy {max(b.machine_cores for b in busy):.2f} cores: other work on it?)"
                )
    p99_busy = median(b.p99 for b in busy)
    return [
        Figure(
            key="status_p99_busy_ms",
            label=f"status p99 at {RATE:g}/s, both cores busy",
            unit="ms",
            value=p99_busy,
            baselines={"idle": median(i.p99 for i in idle)},
            target=f"p99 < {TARGET_P99_MS:g} ms",
            met=None if ctx.smoke else p99_busy < TARGET_P99_MS,
            note=(
                f"{POLLERS} httpx keep-alive threads at {RATE:g} polls/s in all; busy: thumbnail "
                f"jobs (7900 px PNG -> 4096 px PNG, {job_s:.1f} s each alone) queued beforehand; "
                f"worker children used {median(b.worker_cores for b in busy):.2f} cores, "
                f"the API process {median(b.api_cores for b in busy):.2f}; p50 busy "
                f"{median(b.p50 for b in busy):.1f} ms, idle {median(i.p50 for i in idle):.1f} ms; "
                f"whole machine busy {median(b.machine_cores for b in busy):.2f} cores (idle run: "
                f"{median(i.machine_cores for i in idle):.2f})"
            ),
        )
    ]
