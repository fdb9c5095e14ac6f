"""Many large uploads at once: the server's peak RSS and the aggregate MB/s.

16 client threads (smoke: 4), each with its own connection, wait on a barrier and then all stream a
64 MiB multipart body (smoke: 4 MiB) at the same moment, to filejobs (``FILEJOBS_WORKERS=0``), the
tutorial and the raw ASGI app in turn, round by round. While a burst runs, the server process's RSS
is sampled every 20 ms (the process only: filejobs' worker children never touch an upload). Each
upload is checked on arrival and deleted afterwards, as in :mod:`.upload`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from scripts.bench.common import MB, AppName, Context, MiB, RssSampler
from scripts.bench.figures.upload import (
    Payload,
    Sent,
    Target,
    check_free_disk,
    clean_up,
    median,
    mib,
    rotated,
    running,
    send,
    settle,
    size_label,
    warm_up,
)
from scripts.bench.report import Figure

UPLOADS, SIZE_MIB = 16, 64
SMOKE_UPLOADS, SMOKE_SIZE_MIB = 4, 4
APPS: tuple[AppName, ...] = ("filejobs", "tutorial", "raw")
START_TIMEOUT = 60.0  # seconds the threads wait for each other at the barrier


@dataclass
class Burst:
    """One burst of simultaneous uploads to one app."""

    sent: list[Sent]
    peak_rss: int  # bytes, the server process only
    rss_before: int

    @property
    def mbps(self) -> float:
        """Every file's bytes / (first byte of the first upload -> last 202), 10^6 bytes/s."""
        started = min(s.first_byte for s in self.sent)
        finished = max(s.answered for s in self.sent)
        return sum(s.size for s in self.sent) / (finished - started) / MB


def burst(target: Target, payload: Payload, count: int) -> Burst:
    """``count`` threads upload ``payload`` to ``target`` together while its RSS is sampled."""
    settle()
    barrier = threading.Barrier(count)

    def one() -> Sent:
        with target.client() as client:
            barrier.wait(START_TIMEOUT)
            return send(client, target, payload)

    with RssSampler(target.pid) as rss, ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(one) for _ in range(count)]
        sent = [f.result() for f in futures]  # re-raises a failed upload
    with target.client() as client:
        clean_up(client, target, sent)
    return Burst(sent, rss.peak, rss.before)


def run(ctx: Context) -> list[Figure]:
    """Peak RSS and aggregate MB/s of 16 simultaneous 64 MiB uploads: filejobs, tutorial, raw."""
    count, size_mib = (SMOKE_UPLOADS, SMOKE_SIZE_MIB) if ctx.smoke else (UPLOADS, SIZE_MIB)
    payload = Payload.of(size_mib)
    check_free_disk(ctx, 2 * count * payload.size + 512 * MiB)  # the tutorial: spool + stored copy
    rounds: list[dict[AppName, Burst]] = []
    with running(ctx, "concurrent", APPS, payload.size) as targets:
        warm_up(targets)
        for index in range(ctx.rounds):
            result = {name: burst(targets[name], payload, count) for name in rotated(APPS, index)}
            rounds.append(result)
            summary = ", ".join(f"{n} {mib(b.peak_rss):.1f} MiB {b.mbps:.0f} MB/s" for n, b in result.items())
            ctx.say(f"   round {index + 1}: {summary}")
    what = f"{count} x {size_label(size_mib)} at once"
    return [rss_figure(ctx, rounds, what, count), throughput_figure(rounds, what)]


def rss_figure(ctx: Context, rounds: list[dict[AppName, Burst]], what: str, count: int) -> Figure:
    peaks = {name: median(mib(r[name].peak_rss) for r in rounds) for name in APPS}
    before = median(mib(r["filejobs"].rss_before) for r in rounds)
    return Figure(
        key="concurrent_peak_rss_mib",
        label=f"peak RSS, {what}",
        unit="MiB",
        value=peaks["filejobs"],
        baselines={"tutorial": peaks["tutorial"], "raw": peaks["raw"]},
        note=(
            "the server process only, sampled every 20 ms during the burst, median of rounds "
            f"(filejobs before the burst: {before:.1f} MiB, so about "
            f"{(peaks['filejobs'] - before) / count:.1f} MiB per upload in flight). "
            "Informational: the issue sets no limit here (100 MB is for one 1 GiB upload)"
        ),
    )


def throughput_figure(rounds: list[dict[AppName, Burst]], what: str) -> Figure:
    speeds = {name: median(r[name].mbps for r in rounds) for name in APPS}
    return Figure(
        key="concurrent_mbps",
        label=f"aggregate MB/s, {what}",
        unit="MB/s",
        value=speeds["filejobs"],
        baselines={"tutorial": speeds["tutorial"], "raw": speeds["raw"]},
        note=(
            "all files' bytes / (first byte of the first upload -> the last 202), 10^6 bytes/s, median "
            "of rounds; the client's threads share the cores with the server"
        ),
    )
