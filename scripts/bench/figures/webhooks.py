"""Webhooks: how soon a finished job's signed POST reaches the receiver, beside its SSE event, and
what one registered endpoint costs the accept path.

Latency: one ``filejobs serve`` (local backend, its worker processes) with one webhook endpoint,
a receiver (a threaded HTTP server in this process, on 127.0.0.1) and one ``GET /v1/events``
stream open; K jobs are uploaded one at a time, paced. For each job, from its ``finished_at`` (the
worker's timestamp, in the payload, taken just before the commit that writes the outbox row) to
the moment the receiver got the POST, and to the moment the stream got the job's ``succeeded``
event: the same change, the same clock, the same run. Every delivery is verified with
standardwebhooks.

Accept cost: two ``filejobs serve`` with ``WORKERS=0`` (the accept path only), one with an
endpoint registered and one without; wrk POSTs 1 KiB files to each for a fixed time, alternately,
and the medians of uploads/s are compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

from filejobs.testing.webhooks import Receiver
from scripts.bench.common import UPLOAD_PATH, Context, filejobs_server
from scripts.bench.figures.filejobs_load import filejobs_env, median, percentile, small_body
from scripts.bench.figures.small_uploads import post_small
from scripts.bench.report import Figure
from scripts.bench.wrk import WrkResult

HOOKS_ALLOWED = {"FILEJOBS_WEBHOOK_ALLOW_HTTP": "true", "FILEJOBS_WEBHOOK_ALLOW_PRIVATE": "true"}


def _finished(body: dict[str, object]) -> float:
    return datetime.fromisoformat(str(body["finished_at"]).replace("Z", "+00:00")).timestamp()


async def _events(
    client: httpx.AsyncClient,
    ready: asyncio.Event,
    arrivals: dict[str, tuple[float, float]],
    expected: int,
    all_in: asyncio.Event,
) -> None:
    """Follow /v1/events; note when each job's first ``succeeded`` event arrives (and its finish)."""
    async with client.stream("GET", "/v1/events") as response:
        response.raise_for_status()
        event, data = "", ""
        async for line in response.aiter_lines():
            if line.startswith("retry:"):
                ready.set()
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and event == "job":
                body = json.loads(data)
                if body["status"] == "succeeded" and body["id"] not in arrivals:
                    arrivals[body["id"]] = (time.time(), _finished(body))
                    if len(arrivals) >= expected:
                        all_in.set()
                event = ""


async def _latencies(
    base_url: str, receiver: Receiver, jobs: int, pace: float
) -> tuple[list[float], list[float]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        hook = (await client.post("/v1/webhooks", json={"url": receiver.url})).raise_for_status().json()
        arrivals: dict[str, tuple[float, float]] = {}
        ready, all_in = asyncio.Event(), asyncio.Event()
        stream = asyncio.create_task(_events(client, ready, arrivals, jobs, all_in))
        await asyncio.wait_for(ready.wait(), 60)
        body = small_body().block
        ids = []
        for _ in range(jobs):
            response = await client.post("/v1/jobs", files={"file": ("w.txt", body, "text/plain")})
            ids.append(response.raise_for_status().json()["id"])
            await asyncio.sleep(pace)
        await asyncio.to_thread(
            receiver.wait_for, lambda got: len({r.webhook_id for r in got if r.answered == 200}) >= jobs, 120
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 60)
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
    verifier = Webhook(hook["secret"])
    webhook_ms: dict[str, float] = {}
    for request in receiver.delivered():
        event = verifier.verify(request.body, request.headers)
        job_id = event["data"]["id"]
        webhook_ms.setdefault(job_id, (request.at - _finished(event["data"])) * 1000)
    missing = set(ids) - set(webhook_ms)
    if missing or len(arrivals) < jobs:
        raise RuntimeError(f"{len(missing)} webhook(s) and {jobs - len(arrivals)} event(s) never arrived")
    sse_ms = [(at - finished) * 1000 for at, finished in (arrivals[i] for i in ids)]
    return [webhook_ms[i] for i in ids], sse_ms


def run(ctx: Context) -> list[Figure]:
    jobs = 10 if ctx.smoke else 200
    pace = 0.02 if ctx.smoke else 0.05
    seconds = 1 if ctx.smoke else 10
    root = ctx.subdir("webhooks")
    with Receiver() as receiver, filejobs_server(root / "latency", filejobs_env(**HOOKS_ALLOWED)) as server:
        hooks, events = asyncio.run(_latencies(server.base_url, receiver, jobs, pace))
    for name, values in (("webhook", hooks), ("SSE", events)):
        ctx.say(f"   {name:8s} p50 {percentile(values, 50):7.1f} ms  p99 {percentile(values, 99):7.1f} ms")

    results: dict[str, list[WrkResult]] = {"one endpoint": [], "none": []}
    env = filejobs_env(FILEJOBS_WORKERS="0", **HOOKS_ALLOWED)
    with (
        Receiver() as idle_receiver,
        filejobs_server(root / "hooked", env, scalable=True) as hooked,
        filejobs_server(root / "plain", env, scalable=True) as plain,
    ):
        with hooked.client() as client:
            client.post("/v1/webhooks", json={"url": idle_receiver.url}).raise_for_status()
        bases = {"one endpoint": hooked.base_url, "none": plain.base_url}
        for base in bases.values():
            post_small(base, UPLOAD_PATH["filejobs"], 1)  # warm up
        for round_no in range(ctx.rounds):
            names = list(bases) if round_no % 2 == 0 else list(bases)[::-1]
            for name in names:
                got = post_small(bases[name], UPLOAD_PATH["filejobs"], seconds)
                results[name].append(got)
                ctx.say(f"   round {round_no + 1} {name:12s} {got.rps:8.0f} uploads/s")
    with_hook, without = (
        median(r.rps for r in results["one endpoint"]),
        median(r.rps for r in results["none"]),
    )
    ratio = with_hook / without if without else 0.0

    figures = []
    for p, target in ((50, 100.0), (99, 500.0)):
        value = percentile(hooks, p)
        figures.append(
            Figure(
                key=f"webhook_delivery_p{p}_ms",
                label=f"job finished -> webhook received, p{p}",
                unit="ms",
                value=value,
                baselines={"SSE": percentile(events, p)},
                target=f"<= {target:g} ms",
                met=None if ctx.smoke else value <= target,
                note=f"{jobs} jobs, one endpoint, from finished_at; SSE: the same jobs' succeeded events",
            )
        )
    figures.append(
        Figure(
            key="webhook_accept_cost_ratio",
            label="1 KiB uploads/s, one endpoint vs none",
            unit="x",
            value=ratio,
            target=">= 0.95x",
            met=None if ctx.smoke else ratio >= 0.95,
            note=f"wrk -c16, WORKERS=0; {with_hook:.0f} uploads/s with one endpoint, {without:.0f} without",
        )
    )
    return figures
