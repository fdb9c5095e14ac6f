"""Live events: how soon a change reaches N open streams, and what N idle streams cost.

filejobs runs one process with ``FILEJOBS_WORKERS=0`` (nothing changes but what the benchmark does).
N clients (asyncio + httpx in this process) hold ``GET /v1/events`` streams; the benchmark uploads a
job, waits a random 0.3-0.8 s (so a periodic poll is met at every phase; long-polls are all sent
before the wait starts), then cancels it through the API, one job at a time; each client notes
when the ``cancelled`` event arrives. Delivery latency = that moment minus the moment the cancel
request was sent, over N clients x K jobs.

The baseline, in the same run and the same service, is what a client had before: N clients
long-polling the job (``GET /v1/jobs/{id}?wait=30``, which also wakes on in-process changes), timed
the same way. Both are measured twice: the change made through the same API process (in-process
wake-up), and through a second ``filejobs serve`` on the same data directory (the stream's process
learns of it from the database: SQLite's poll every ``EVENTS_POLL_INTERVAL``, 0.25 s; a long-poll
re-reads its row every 0.5 s).

Idle cost: the server's CPU time over a few seconds with N streams open and nothing happening
(keep-alive comments and the feed's polls only), and its RSS growth per open stream.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time

import httpx
import psutil

from scripts.bench.common import Context, filejobs_server, rss
from scripts.bench.figures.filejobs_load import filejobs_env, percentile, small_body
from scripts.bench.report import Figure

MiB = 1024 * 1024


async def _stream_arrivals(
    client: httpx.AsyncClient, ready: asyncio.Queue[None], arrivals: dict[str, list[float]]
) -> None:
    """Follow /v1/events; note when each job's ``cancelled`` event arrives."""
    async with client.stream("GET", "/v1/events") as response:
        response.raise_for_status()
        event, data = "", ""
        async for line in response.aiter_lines():
            if line.startswith("retry:"):
                await ready.put(None)
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and event == "job":
                body = json.loads(data)
                if body["status"] == "cancelled":
                    arrivals.setdefault(body["id"], []).append(time.perf_counter())
                event = ""


async def _long_poll(client: httpx.AsyncClient, job_id: str, etag: str, sent: asyncio.Queue[None]) -> float:
    """One long-poll of ``job_id``; puts to ``sent`` once its request is on the wire."""

    async def trace(event: str, _info: dict[str, object]) -> None:
        if event == "http11.send_request_headers.complete":
            await sent.put(None)

    for attempt in (1, 2):
        try:
            response = await client.get(
                f"/v1/jobs/{job_id}",
                params={"wait": 30},
                headers={"If-None-Match": etag},
                extensions={"trace": trace} if attempt == 1 else {},
            )
            break
        except httpx.RemoteProtocolError:
            # A reused keep-alive connection closed under us (about 1 in 1,000 here with 200 at
            # once, on main before the event streams too): ask again, as any client would.
            if attempt == 2:
                raise
    response.raise_for_status()
    return time.perf_counter()


async def _measure(
    watch_url: str, change_url: str, clients: int, jobs: int, how: str, pauses: tuple[float, float]
) -> list[float]:
    """Delivery latencies (ms) of ``jobs`` cancels to ``clients`` clients, streams or long-polls."""
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    latencies: list[float] = []
    pause = functools.partial(random.Random(f"{how} {watch_url != change_url}").uniform, *pauses)
    async with (
        httpx.AsyncClient(base_url=watch_url, timeout=60, limits=limits) as watch,
        httpx.AsyncClient(base_url=change_url, timeout=60) as change,
    ):
        arrivals: dict[str, list[float]] = {}
        streams: list[asyncio.Task[None]] = []
        if how == "stream":
            ready: asyncio.Queue[None] = asyncio.Queue()
            streams = [asyncio.create_task(_stream_arrivals(watch, ready, arrivals)) for _ in range(clients)]
            for _ in range(clients):
                await asyncio.wait_for(ready.get(), 60)
        body = small_body().block
        for _ in range(jobs):
            response = await change.post("/v1/jobs", files={"file": ("e.txt", body, "text/plain")})
            response.raise_for_status()
            job_id, etag = response.json()["id"], response.headers["ETag"]
            polls = []
            if how == "long-poll":
                sent: asyncio.Queue[None] = asyncio.Queue()
                polls = [asyncio.create_task(_long_poll(watch, job_id, etag, sent)) for _ in range(clients)]
                for _ in range(clients):  # every long-poll is on the wire before the change
                    await asyncio.wait_for(sent.get(), 60)
            await asyncio.sleep(pause())  # long-polls reach the server and wait; streams saw it queued
            changed = time.perf_counter()
            (await change.post(f"/v1/jobs/{job_id}/cancel")).raise_for_status()
            if how == "long-poll":
                done = await asyncio.wait_for(asyncio.gather(*polls), 60)
            else:
                deadline = time.monotonic() + 60
                while len(arrivals.get(job_id, ())) < clients:
                    if time.monotonic() > deadline:
                        got = len(arrivals.get(job_id, ()))
                        raise RuntimeError(f"only {got} of {clients} streams got the change")
                    await asyncio.sleep(0.005)
                done = arrivals[job_id]
            latencies += [(at - changed) * 1000 for at in done]
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    return latencies


async def _idle_cost(base_url: str, pid: int, clients: int, seconds: float) -> tuple[float, float, float]:
    """(CPU % of the server with ``clients`` idle streams, the same with none, RSS MiB per stream)."""
    process = psutil.Process(pid)

    def cpu() -> float:
        times = process.cpu_times()
        return times.user + times.system

    before = cpu()
    await asyncio.sleep(seconds)
    idle_none = (cpu() - before) / seconds * 100
    rss_before = rss(pid)
    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        ready: asyncio.Queue[None] = asyncio.Queue()
        streams = [asyncio.create_task(_stream_arrivals(client, ready, {})) for _ in range(clients)]
        for _ in range(clients):
            await asyncio.wait_for(ready.get(), 60)
        await asyncio.sleep(0.5)
        before = cpu()
        await asyncio.sleep(seconds)
        idle_streams = (cpu() - before) / seconds * 100
        per_stream = (rss(pid) - rss_before) / clients / MiB
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    return idle_streams, idle_none, per_stream


def run(ctx: Context) -> list[Figure]:
    clients = 20 if ctx.smoke else 200
    jobs = 2 if ctx.smoke else 10
    seconds = 1.0 if ctx.smoke else 5.0
    pauses = (0.05, 0.15) if ctx.smoke else (0.3, 0.8)
    root = ctx.subdir("events")
    results: dict[tuple[str, str], list[float]] = {}
    env = filejobs_env(FILEJOBS_WORKERS="0", FILEJOBS_RATE_LIMIT="0")
    with (
        filejobs_server(root / "data", env) as server,
        filejobs_server(root / "data", env) as other,  # a second API process on the same data
    ):
        for where, change_url in (("same process", server.base_url), ("other process", other.base_url)):
            for how in ("stream", "long-poll"):
                latencies = asyncio.run(_measure(server.base_url, change_url, clients, jobs, how, pauses))
                results[where, how] = latencies
                ctx.say(
                    f"   {how:9s} {where:13s} p50 {percentile(latencies, 50):7.1f} ms"
                    f"  p99 {percentile(latencies, 99):7.1f} ms  ({len(latencies)} deliveries)"
                )
        idle = asyncio.run(_idle_cost(server.base_url, server.pid, clients, seconds))
        idle_streams, idle_none, per_stream = idle
        ctx.say(
            f"   idle: {idle_streams:.2f} % CPU with {clients} streams, {idle_none:.2f} % without; "
            f"{per_stream * 1024:.0f} KiB per stream"
        )
    figures = []
    for where in ("same process", "other process"):
        stream, poll = results[where, "stream"], results[where, "long-poll"]
        for p in (50, 99):
            figures.append(
                Figure(
                    key=f"event_delivery_{where.split()[0]}_p{p}_ms",
                    label=f"change -> {clients} clients, {where}, p{p}",
                    unit="ms",
                    value=percentile(stream, p),
                    baselines={"long-poll": percentile(poll, p)},
                    note=f"GET /v1/events streams vs ?wait=30 long-polls; {jobs} cancels",
                )
            )
    figures += [
        Figure(
            key="event_streams_idle_cpu_pct",
            label=f"server CPU, {clients} idle streams",
            unit="%",
            value=idle_streams,
            note=f"over {seconds:g} s: keep-alives and the SQLite feed's polls only; "
            f"{idle_none:.2f} % with no stream open (CPU time is counted in 10 ms ticks)",
        ),
        Figure(
            key="event_stream_rss_kib",
            label="server RSS per open stream",
            unit="KiB",
            value=per_stream * 1024,
            note=f"RSS growth with {clients} streams open, divided by {clients}",
        ),
    ]
    return figures
