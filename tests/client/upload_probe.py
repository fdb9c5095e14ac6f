"""Run in a fresh process by test_memory: upload one file and report the process's memory.

``python -m tests.client.upload_probe URL PATH sync|async`` prints JSON: how far the peak RSS
rose above the RSS just before the submit (imports done, connection warmed up), tracemalloc's peak
over the submit, the last ``on_progress`` value and the job's file size.

On Linux the peak (``VmHWM``) is reset right before the submit (``/proc/self/clear_refs``), so
the growth is exact; elsewhere it falls back to ``ru_maxrss``, which can only under-report.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

from filejobs.client import AsyncClient, Client


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def start_measuring() -> int:
    """Reset the peak RSS where possible; the baseline to measure growth from."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    try:
        return _status_kib("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_sync(url: str, path: Path, warm: Path) -> dict[str, Any]:
    seen: list[int] = []
    with Client(url, timeout=300) as client:
        client.delete(client.submit(warm, on_progress=seen.append).id)
        before = start_measuring()
        tracemalloc.start()
        job = client.submit(path, on_progress=seen.append)
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        after = peak_rss()
        client.delete(job.id)
    return {"rss_growth": after - before, "traced_peak": traced, "progress": seen[-1], "size": job.file.size}


async def measure_async(url: str, path: Path, warm: Path) -> dict[str, Any]:
    seen: list[int] = []
    async with AsyncClient(url, timeout=300) as client:
        await client.delete((await client.submit(warm, on_progress=seen.append)).id)
        before = start_measuring()
        tracemalloc.start()
        job = await client.submit(path, on_progress=seen.append)
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        after = peak_rss()
        await client.delete(job.id)
    return {"rss_growth": after - before, "traced_peak": traced, "progress": seen[-1], "size": job.file.size}


def main() -> None:
    url, path, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    with tempfile.TemporaryDirectory() as scratch:
        warm = Path(scratch) / "warm.bin"
        warm.write_bytes(b"\1" * 300_000)
        if mode == "sync":
            report = measure_sync(url, path, warm)
        else:
            report = anyio.run(measure_async, url, path, warm)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
