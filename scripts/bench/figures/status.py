"""Status polls per second: ``GET /v1/jobs/{id}`` of filejobs against the tutorial's dict lookup.

One small ``inspect`` job is submitted to each app and waited for until it succeeded; then wrk
GETs that job's status over 16 keep-alive connections for a fixed time, alternately on filejobs
(default workers, idle by then: each poll reads the row from SQLite and answers the body kept for
its ETag, rendered at the first poll; see filejobs.api.fast_status) and on the tutorial
(``GET /jobs/{id}``: a dict lookup); medians of requests/s.
"""

from __future__ import annotations

import time

import httpx

from scripts.bench.common import STATUS_PATH, Context, UvicornApp, filejobs_server
from scripts.bench.figures.filejobs_load import filejobs_env, median, small_body, submit, wait_finished
from scripts.bench.report import Figure
from scripts.bench.wrk import WrkResult, run_wrk

CONNECTIONS = 16
NAMES = ("filejobs", "tutorial")


def filejobs_job(base_url: str) -> str:
    """A succeeded ``inspect`` job of filejobs: its id."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        job_id = submit(client, small_body().block, "status.txt")
        job = wait_finished(client, job_id, timeout=120)
    if job["status"] != "succeeded":
        raise RuntimeError(f"the job to poll ended {job['status']}: {job.get('error')}")
    return job_id


def tutorial_job(base_url: str) -> str:
    """A succeeded job of the tutorial (its background task runs just after the 202)."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        response = client.post("/jobs", files={"file": ("status.txt", small_body().block)})
        response.raise_for_status()
        job_id: str = response.json()["id"]
        deadline = time.monotonic() + 30
        while (job := client.get(f"/jobs/{job_id}").raise_for_status().json())["status"] != "succeeded":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the tutorial's job is still {job['status']} after 30 s")
            time.sleep(0.01)
    return job_id


def poll(url: str, seconds: int) -> WrkResult:
    """wrk -c16 GETs of ``url`` for ``seconds``."""
    return run_wrk(url, seconds=seconds, connections=CONNECTIONS)


def run(ctx: Context) -> list[Figure]:
    """Alternate wrk runs polling one job on filejobs and on the tutorial; median polls/s."""
    seconds = 2 if ctx.smoke else 10
    root = ctx.subdir("status")
    results: dict[str, list[WrkResult]] = {name: [] for name in NAMES}
    with (
        filejobs_server(root / "filejobs", filejobs_env(), scalable=True) as server,
        UvicornApp("tutorial", root / "tutorial") as tutorial,
    ):
        urls = {
            "filejobs": server.base_url + STATUS_PATH["filejobs"].format(id=filejobs_job(server.base_url)),
            "tutorial": tutorial.base_url
            + STATUS_PATH["tutorial"].format(id=tutorial_job(tutorial.base_url)),
        }
        for name in NAMES:  # warm up
            poll(urls[name], 1)
        for round_no in range(ctx.rounds):
            order = NAMES if round_no % 2 == 0 else NAMES[::-1]
            for name in order:
                got = poll(urls[name], seconds)
                results[name].append(got)
                ctx.say(f"   round {round_no + 1} {name:9s} {got.rps:8.0f} polls/s  p99 {got.p99_ms:6.1f} ms")
    fj = median(r.rps for r in results["filejobs"])
    tut = median(r.rps for r in results["tutorial"])
    return [
        Figure(
            key="status_polls_rps",
            label="status polls/s, 16 connections",
            unit="req/s",
            value=fj,
            baselines={"tutorial": tut},
            target=">= 0.9x tutorial",
            met=None if ctx.smoke else fj >= 0.9 * tut,
            note=(
                f"wrk -t1 -c{CONNECTIONS} GET of one succeeded job; filejobs reads the row from SQLite, "
                "the tutorial looks it up in a dict; p99 "
                f"filejobs {median(r.p99_ms for r in results['filejobs']):.1f} ms, "
                f"tutorial {median(r.p99_ms for r in results['tutorial']):.1f} ms"
            ),
        )
    ]
