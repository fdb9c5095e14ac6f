"""In-process cost of placing held 1 KiB uploads: a named temp file renamed, or an unnamed one linked.

The group committer's place pool writes each small upload held in memory to the disk: before, a
temp file in ``tmp/`` (create, lock, check its inode, write, fsync, rename, close); now, an unnamed
file in ``uploads/`` (``O_TMPFILE``: create, write, fsync, link, close). This runs
:meth:`LocalUploadSink.placer` as the committer does (``--batch`` files at once on a pool of
:data:`~filejobs.jobs.group_commit.PLACE_THREADS` threads, then the ``uploads/`` fsync), the two ways
alternating, and prints the median process CPU time and wall time per file of ``--rounds`` runs:

    python -m scripts.small_place --files 800 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from filejobs import storage
from filejobs.ids import new_job_id
from filejobs.jobs.group_commit import PLACE_THREADS
from filejobs.storage import LocalStorage, LocalUploadSink


def held_sink(store: LocalStorage, content: bytes) -> LocalUploadSink:
    sink = store.open_upload()
    asyncio.run(sink.write(content, final=True))
    assert sink.held
    return sink


def place_files(store: LocalStorage, files: int, batch: int, pool: ThreadPoolExecutor) -> tuple[float, float]:
    """(CPU, wall) seconds per file placing ``files`` held 1 KiB files, ``batch`` at a time."""
    sinks = [held_sink(store, os.urandom(1024)) for _ in range(files)]
    placers = [sink.placer(store.upload_key(new_job_id())) for sink in sinks]
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, files, batch):
        list(pool.map(lambda place: place(), placers[start : start + batch]))
        store.sync_uploads_dir()
    return (time.process_time() - cpu) / files, (time.perf_counter() - wall) / files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=800, help="files per run")
    parser.add_argument("--batch", type=int, default=8, help="files placed together (a group commit's batch)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if not storage._UNNAMED["ok"]:
        raise SystemExit("O_TMPFILE or /proc/self/fd is not available here: nothing to compare")
    ways = {"named temp + rename": False, "unnamed + link": True}
    cpu: dict[str, list[float]] = {way: [] for way in ways}
    wall: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="fj-place-", dir=os.environ.get("TMPDIR")) as tmp:
        store = LocalStorage(Path(tmp))
        with ThreadPoolExecutor(PLACE_THREADS) as pool:
            for _ in range(args.rounds):
                for way, unnamed in ways.items():
                    storage._UNNAMED["ok"] = unnamed
                    used, took = place_files(store, args.files, args.batch, pool)
                    cpu[way].append(used)
                    wall[way].append(took)
                    for path in (store.root / "uploads").iterdir():
                        path.unlink()
    for way in ways:
        print(
            f"{way:20s} CPU {statistics.median(cpu[way]) * 1e6:6.1f} us/file, "
            f"wall {statistics.median(wall[way]) * 1e6:7.1f} us/file (medians of {args.rounds})"
        )


if __name__ == "__main__":
    main()
