#!/usr/bin/env python
"""Upload throughput against the disk: how close does ``POST /v1/jobs`` get to ``dd``?

Each round runs ``dd if=/dev/zero of=<dir>/dd.bin bs=1M count=N conv=fsync`` (the disk's sequential
write speed, fsync included), then streams an N MiB multipart upload to a real ``filejobs serve``
(``FILEJOBS_WORKERS=0``: nothing processes the file) whose data directory is on the same
filesystem. The upload body is built by hand from a generator (preamble, 1 MiB chunks of one random
block, closing boundary) with a Content-Length, so the client never buffers it.

Reported per round and as medians:

* dd MB/s and upload MB/s (10^6 bytes/s; upload: first byte sent → 202 received), and their ratio;
* last byte → 202: from handing the last body byte to the socket to the 202 (fsyncs, rename, row);
* peak RSS of the server process and its children, sampled every 20 ms during the upload.

    python scripts/bench_upload.py --size-mib 1024 --rounds 3 --dir /var/tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e.server import Server  # noqa: E402

MiB = 1024 * 1024
MB = 1_000_000
SAMPLE_EVERY = 0.02
COLUMNS = [
    ("round", 6),
    ("dd MB/s", 8),
    ("upload MB/s", 11),
    ("ratio", 5),
    ("last→202 s", 10),
    ("peak RSS MiB", 12),
]


@dataclass
class Round:
    dd_mbps: float
    upload_mbps: float
    last_byte_to_202: float
    peak_rss: int
    rss_before: int

    @property
    def ratio(self) -> float:
        return self.upload_mbps / self.dd_mbps

    def figures(self) -> list[float]:
        """The table's columns after the first."""
        return [self.dd_mbps, self.upload_mbps, self.ratio, self.last_byte_to_202, self.peak_rss / MiB]


def row(label: str, figures: list[float]) -> str:
    cells = [f"{label:>{COLUMNS[0][1]}}"]
    for (_, width), digits, value in zip(COLUMNS[1:], (1, 1, 2, 3, 1), figures, strict=True):
        cells.append(f"{value:>{width}.{digits}f}")
    return "  ".join(cells)


# ---- dd -----------------------------------------------------------------------------------------


def run_dd(directory: Path, size_mib: int) -> float:
    """MB/s of ``dd … conv=fsync`` writing ``size_mib`` MiB into ``directory`` (wall clock)."""
    target = directory / "dd.bin"
    command = ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={size_mib}", "conv=fsync"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    target.unlink(missing_ok=True)
    if done.returncode != 0:
        raise SystemExit(f"dd failed ({done.returncode}): {done.stderr.strip()}")
    reported = re.search(r"copied, ([\d.]+) s", done.stderr)
    if reported:  # dd's own clock excludes process start-up; use it when present
        elapsed = float(reported.group(1))
    return size_mib * MiB / elapsed / MB


# ---- the upload --------------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS of a process and its children every 20 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        total = 0
        with contextlib.suppress(psutil.Error):
            total += self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


class Body:
    """A multipart/form-data body of ``chunks`` copies of ``block``, streamed; records when bytes left."""

    def __init__(self, block: bytes, chunks: int, name: str = "bench.bin") -> None:
        self.boundary = f"filejobs-bench-{os.urandom(12).hex()}"
        self.block = block
        self.chunks = chunks
        self.preamble = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.epilogue = f"\r\n--{self.boundary}--\r\n".encode()
        self.first_byte: float | None = None
        self.last_byte: float | None = None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        return len(self.preamble) + len(self.block) * self.chunks + len(self.epilogue)

    def __iter__(self) -> Iterator[bytes]:
        self.first_byte = time.perf_counter()
        yield self.preamble
        for _ in range(self.chunks):
            yield self.block
        yield self.epilogue
        # httpx asks for the next piece only once the previous one is written to the socket.
        self.last_byte = time.perf_counter()


def upload_once(
    server: Server, block: bytes, size_mib: int, expected_sha256: str
) -> tuple[float, float, int]:
    """Upload ``size_mib`` MiB; return (MB/s first byte → 202, last byte → 202 in s, peak RSS)."""
    body = Body(block, size_mib)
    with (
        httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(600.0)) as client,
        RssSampler(server.pid) as sampler,
    ):
        response = client.post(
            "/v1/jobs",
            content=iter(body),
            headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
        )
        answered = time.perf_counter()
    if response.status_code != 202:
        raise SystemExit(f"upload failed: HTTP {response.status_code}: {response.text[:500]}")
    job = response.json()
    if body.first_byte is None or body.last_byte is None:
        raise SystemExit("the client did not send the whole body")
    if job["file"]["size"] != size_mib * MiB or job["file"]["sha256"] != expected_sha256:
        raise SystemExit(f"the server stored something else: {job['file']}")
    with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
        client.delete(f"/v1/jobs/{job['id']}")  # keep the disk from filling up over the rounds
    seconds = answered - body.first_byte
    return size_mib * MiB / seconds / MB, answered - body.last_byte, sampler.peak


# ---- main ---------------------------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    best = None
    for part in psutil.disk_partitions(all=True):
        if str(path.resolve()).startswith(part.mountpoint) and (
            best is None or len(part.mountpoint) > len(best.mountpoint)
        ):
            best = part
    return f"{best.device} ({best.fstype}) on {best.mountpoint}" if best else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="upload and dd size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="dd/upload pairs to run (default 3)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="working directory for dd.bin and the server's data dir (default: a new temp dir, removed)",
    )
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.rounds < 1:
        parser.error("--size-mib and --rounds must be at least 1")

    own_dir = args.dir is None
    work = Path(tempfile.mkdtemp(prefix="filejobs-bench-")) if own_dir else args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    need = 2 * args.size_mib * MiB + 256 * MiB
    if shutil.disk_usage(work).free < need:
        parser.error(f"{work} needs at least {need // MiB} MiB free")

    block = os.urandom(MiB)
    digest = hashlib.sha256()
    for _ in range(args.size_mib):
        digest.update(block)
    expected = digest.hexdigest()

    print(f"directory:  {work}  [{filesystem_of(work)}]")
    print(f"size:       {args.size_mib} MiB x {args.rounds} rounds; CPUs: {os.cpu_count()}")
    env = {"FILEJOBS_WORKERS": "0", "FILEJOBS_MAX_UPLOAD_BYTES": str(args.size_mib * MiB + MiB)}
    server = Server(work / "data", env=env, log_path=work / "server.log")
    rounds: list[Round] = []
    try:
        server.start()
        print(f"server:     pid {server.pid} at {server.base_url}, log {server.log_path}\n")
        header = "  ".join(f"{title:>{width}}" for title, width in COLUMNS)
        print(header)
        print("-" * len(header))
        for index in range(1, args.rounds + 1):
            dd = run_dd(work, args.size_mib)
            rss_before = RssSampler(server.pid).rss()
            mbps, latency, peak = upload_once(server, block, args.size_mib, expected)
            result = Round(dd, mbps, latency, peak, rss_before)
            rounds.append(result)
            print(row(str(index), result.figures()))
        print("-" * len(header))
        medians = [statistics.median(r.figures()[i] for r in rounds) for i in range(len(COLUMNS) - 1)]
        print(row("median", medians))
        before = ", ".join(f"{r.rss_before / MiB:.1f}" for r in rounds)
        print(f"\nserver RSS before each upload (MiB): {before}")
    finally:
        server.stop()
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            (work / "dd.bin").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
