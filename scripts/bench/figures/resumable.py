"""Resumable uploads (tus): 1 GiB through ``/v1/uploads`` against a plain ``POST /v1/jobs`` of the
same bytes in the same run, the server's peak RSS meanwhile, and a 1 GiB upload cut at 50 % and
resumed (bytes sent in all, reconnect -> first byte stored).

Every tus upload is driven here with httpx, as a tus client does it: ``POST`` (creation), then one
``PATCH`` per chunk streamed from a generator (1 MiB copies of one random block); the last ``PATCH``
must answer ``Filejobs-Job`` and that job must report the size and SHA-256 that were sent. Chunks:
the filejobs client's default (``filejobs.client._tus.DEFAULT_CHUNK``, 64 MiB) and 16 MiB. MB/s is
first byte sent -> last answer, as for the plain upload (:mod:`.upload`). The cut goes through
:class:`tests.tus.proxy.CuttingProxy`, which resets the connection once half the file went through
(one ``PATCH`` of the whole file, as tus-js-client and tuspy send by default); the client then asks
for the offset (``HEAD``) and sends the rest. "Time to resume" is ``HEAD`` sent -> the first 64 KiB
of the resumed ``PATCH`` answered ``204`` (stored, fsynced), so it includes one fsync.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from filejobs.client._tus import DEFAULT_CHUNK
from scripts.bench.common import MB, Context, MiB, RssSampler
from scripts.bench.figures.upload import (
    TIMEOUT,
    Measured,
    Payload,
    Target,
    check_free_disk,
    judged,
    measure,
    median,
    mib,
    running,
    settle,
    warm_up,
)
from scripts.bench.report import Figure
from tests.tus.proxy import CuttingProxy

SIZE_MIB = 1024
#: Measured besides the client's default (64 MiB): what smaller chunks cost.
SMALL_CHUNK = 16 * MiB
SMOKE_SIZE_MIB = 16
BIG_CHUNK = 64 * MiB
RSS_LIMIT_MB = 150.0
RESUME_LIMIT_MS = 100.0
PROBE = 64 * 1024  # the first bytes of the resumed PATCH, answered before the rest is sent
TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class TusSent:
    size: int
    seconds: float  # first PATCH byte sent -> last PATCH answered
    job_id: str
    peak_rss: int = 0

    @property
    def mbps(self) -> float:
        return self.size / self.seconds / MB


def _blocks(payload: Payload, start: int, size: int) -> Iterator[bytes]:
    """``size`` bytes of the payload from ``start`` (a multiple of nothing: cut blocks as needed)."""
    block, length = payload.block, len(payload.block)
    position, end = start, start + size
    while position < end:
        offset = position % length
        piece = block[offset : min(length, offset + end - position)]
        position += len(piece)
        yield piece


def create(client: httpx.Client, payload: Payload) -> str:
    response = client.post("/v1/uploads", headers={**TUS, "Upload-Length": str(payload.size)})
    if response.status_code != 201:
        raise RuntimeError(f"tus creation got HTTP {response.status_code}: {response.text[:300]}")
    return response.headers["location"]


def patch(client: httpx.Client, url: str, payload: Payload, offset: int, size: int) -> httpx.Response:
    headers = {
        **TUS,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Content-Length": str(size),
    }
    return client.patch(url, headers=headers, content=_blocks(payload, offset, size))


def head_offset(client: httpx.Client, url: str) -> int:
    response = client.head(url, headers=TUS)
    if response.status_code != 200:
        raise RuntimeError(f"HEAD {url}: HTTP {response.status_code}")
    return int(response.headers["upload-offset"])


def finished(client: httpx.Client, response: httpx.Response, payload: Payload) -> str:
    job = response.headers.get("filejobs-job")
    if response.status_code != 204 or not job:
        raise RuntimeError(f"the last PATCH got HTTP {response.status_code} without Filejobs-Job")
    answer = client.get(job).json()
    if answer["file"]["size"] != payload.size or answer["file"]["sha256"] != payload.sha256:
        raise RuntimeError(f"sent {payload.size} bytes ({payload.sha256}); the job reports {answer['file']}")
    return str(answer["id"])


def send_tus(target: Target, payload: Payload, chunk: int) -> TusSent:
    """One tus upload in ``chunk``-byte PATCHes; the server's peak RSS meanwhile; the job deleted."""
    settle()
    with httpx.Client(base_url=target.base_url, timeout=TIMEOUT) as client, RssSampler(target.pid) as rss:
        url = create(client, payload)
        started = time.perf_counter()
        offset, response = 0, None
        while offset < payload.size:
            size = min(chunk, payload.size - offset)
            response = patch(client, url, payload, offset, size)
            if response.status_code != 204:
                raise RuntimeError(f"PATCH at {offset}: HTTP {response.status_code}: {response.text[:300]}")
            offset = int(response.headers["upload-offset"])
        seconds = time.perf_counter() - started
        assert response is not None
        job_id = finished(client, response, payload)
        client.delete(f"/v1/jobs/{job_id}")
    return TusSent(payload.size, seconds, job_id, rss.peak)


@dataclass
class Cut:
    sent: int  # bytes through the proxy, both tries, headers included
    resume_ms: float  # HEAD sent -> the first PROBE bytes of the resumed PATCH answered
    resumed_at: int  # the offset HEAD gave


def send_cut(target: Target, payload: Payload) -> Cut:
    """One PATCH of the whole file through a proxy that resets it halfway; resume from HEAD."""
    settle()
    port = int(target.base_url.rsplit(":", 1)[1])
    with CuttingProxy(port, cut_after=payload.size // 2) as proxy:
        with httpx.Client(base_url=proxy.url, timeout=TIMEOUT) as client:
            url = create(client, payload)
            try:
                patch(client, url, payload, 0, payload.size)
                raise RuntimeError("the proxy did not cut the upload")
            except httpx.TransportError:
                pass
        with httpx.Client(base_url=proxy.url, timeout=TIMEOUT) as client:  # a new connection
            began = time.perf_counter()
            offset = head_offset(client, url)
            first = patch(client, url, payload, offset, min(PROBE, payload.size - offset))
            resume_ms = (time.perf_counter() - began) * 1000
            if first.status_code != 204:
                raise RuntimeError(f"the resumed PATCH got HTTP {first.status_code}")
            rest = int(first.headers["upload-offset"])
            last = patch(client, url, payload, rest, payload.size - rest)
            job_id = finished(client, last, payload)
            client.delete(f"/v1/jobs/{job_id}")
        return Cut(proxy.sent, resume_ms, offset)


@dataclass
class Round:
    plain: Measured | None = None
    tus: dict[int, TusSent] = field(default_factory=dict)
    cut: Cut | None = None

    def summary(self) -> str:
        assert self.plain is not None
        assert self.cut is not None
        speeds = ", ".join(f"{mib(c):.0f} MiB chunks {t.mbps:.0f}" for c, t in self.tus.items())
        return (
            f"POST /v1/jobs {self.plain.sent.mbps:.0f} MB/s, tus {speeds} MB/s; cut at 50 %: "
            f"{mib(self.cut.sent):.0f} MiB sent, resumed at {mib(self.cut.resumed_at):.0f} MiB in "
            f"{self.cut.resume_ms:.1f} ms"
        )


def run(ctx: Context) -> list[Figure]:
    size_mib = SMOKE_SIZE_MIB if ctx.smoke else SIZE_MIB
    payload = Payload.of(size_mib)
    chunks = tuple(sorted({SMALL_CHUNK, DEFAULT_CHUNK, BIG_CHUNK})) if not ctx.smoke else (4 * MiB, 8 * MiB)
    check_free_disk(ctx, 2 * payload.size + 512 * MiB)
    rounds: list[Round] = []
    with running(ctx, "resumable", ("filejobs",), payload.size) as targets:
        target = targets["filejobs"]
        warm_up(targets)
        for index in range(ctx.rounds):
            result = Round()
            order = ["plain", *chunks, "cut"]
            for item in order[index % len(order) :] + order[: index % len(order)]:
                if item == "plain":
                    result.plain = measure(target, payload)
                elif item == "cut":
                    result.cut = send_cut(target, payload)
                else:
                    assert isinstance(item, int)
                    result.tus[item] = send_tus(target, payload, item)
            rounds.append(result)
            ctx.say(f"   round {index + 1}: {result.summary()}")
    figures = [throughput(ctx, rounds, payload, chunk) for chunk in chunks]
    figures += [rss(ctx, rounds, payload), resent(ctx, rounds, payload), resume_time(ctx, rounds)]
    return figures


def throughput(ctx: Context, rounds: list[Round], payload: Payload, chunk: int) -> Figure:
    value = median(r.tus[chunk].mbps for r in rounds)
    plain = median(r.plain.sent.mbps for r in rounds if r.plain is not None)
    default = " (the client's default)" if chunk == DEFAULT_CHUNK else ""
    return Figure(
        key=f"resumable_{mib(chunk):.0f}mib_chunks_mbps",
        label=f"{payload.label} through tus, {mib(chunk):.0f} MiB chunks{default}",
        unit="MB/s",
        value=value,
        baselines={"POST /v1/jobs": plain},
        target=">= 0.8x POST /v1/jobs",
        met=judged(ctx.smoke, value >= 0.8 * plain),
        note="first PATCH byte sent -> last PATCH answered (each chunk fsynced before its answer); "
        "the plain upload: first byte -> 202, in the same rounds",
    )


def rss(ctx: Context, rounds: list[Round], payload: Payload) -> Figure:
    value = max(t.peak_rss for r in rounds for t in r.tus.values()) / MB
    plain = median(r.plain.peak_rss for r in rounds if r.plain is not None) / MB
    return Figure(
        key="resumable_peak_rss_mb",
        label=f"server peak RSS, {payload.label} through tus",
        unit="MB",
        value=value,
        baselines={"POST /v1/jobs": plain},
        target=f"<= {RSS_LIMIT_MB:.0f} MB",
        met=judged(ctx.smoke, value <= RSS_LIMIT_MB),
        note="the highest of every tus upload of every round (sampled every 20 ms)",
    )


def resent(ctx: Context, rounds: list[Round], payload: Payload) -> Figure:
    value = max(r.cut.sent for r in rounds if r.cut is not None) / payload.size
    return Figure(
        key="resumable_cut_bytes_sent_ratio",
        label=f"bytes sent for a {payload.label} upload cut at 50 % and resumed",
        unit="x",
        value=value,
        target="<= 1.1x the file",
        met=judged(ctx.smoke, value <= 1.1),
        note="every byte through the proxy (both tries, request heads included) / the file size; the "
        "server keeps what a broken PATCH delivered, so the resume starts where the cut was",
    )


def resume_time(ctx: Context, rounds: list[Round]) -> Figure:
    value = median(r.cut.resume_ms for r in rounds if r.cut is not None)
    return Figure(
        key="resumable_resume_ms",
        label="time to resume (reconnect -> first byte stored)",
        unit="ms",
        value=value,
        target=f"<= {RESUME_LIMIT_MS:.0f} ms",
        met=judged(ctx.smoke, value <= RESUME_LIMIT_MS),
        note=f"a new connection: HEAD, then the first {PROBE // 1024} KiB of the resumed PATCH answered "
        "204 (stored and fsynced), through the proxy",
    )
