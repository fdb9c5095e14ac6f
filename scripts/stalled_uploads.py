#!/usr/bin/env python
"""Server memory held by stalled uploads: N uploads send their head and ~1 MiB of body, then nothing.

Starts its own ``filejobs serve`` (one process, no job workers, no rate limit) in a temporary data
directory, opens ``--uploads`` connections, sends each a ``POST /v1/jobs`` head declaring a larger
file and ``--body-kib`` of its body, then stops sending (the sockets stay open). After ``--settle``
seconds it prints the server's RSS before the uploads and with them all stalled, and how much of
their bodies reached temp files on disk; then it closes the sockets.

    python -m scripts.stalled_uploads                     # 300 uploads of 1 MiB each
    python -m scripts.stalled_uploads --uploads 50 --env FILEJOBS_UPLOAD_IDLE_TIMEOUT=5 --settle 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

from filejobs.testing import Server
from filejobs.testing.stalled import start_stalled_upload

MiB = 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=300, help="stalled uploads (default 300)")
    parser.add_argument("--body-kib", type=int, default=1024, help="body KiB each sends (default 1024)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before measuring (default 5)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="more server settings (repeatable)"
    )
    return parser.parse_args(argv)


def temp_bytes(data_dir: Path) -> tuple[int, int]:
    """(files, bytes) of the upload temp files."""
    files = total = 0
    for entry in os.scandir(data_dir / "tmp"):
        if entry.name.endswith(".part"):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
                files += 1
    return files, total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {"FILEJOBS_WORKERS": "0", "FILEJOBS_RATE_LIMIT": "0", "FILEJOBS_MIN_FREE_DISK": "0"}
    env.update(item.split("=", 1) for item in args.env)  # type: ignore[arg-type]
    body_bytes = args.body_kib * 1024
    with tempfile.TemporaryDirectory(prefix="filejobs-stalled-") as work:
        data_dir = Path(work) / "data"
        with Server(data_dir, env=env, args=["--log-level", "warning"]) as server:
            process = psutil.Process(server.pid)
            before = process.memory_info().rss
            sockets: list[socket.socket] = []
            try:
                for _ in range(args.uploads):
                    sockets.append(start_stalled_upload(server.port, body_bytes))
                time.sleep(args.settle)
                stalled = process.memory_info().rss
                files, on_disk = temp_bytes(data_dir)
                print(f"stalled uploads:      {len(sockets)} x {args.body_kib} KiB of body")
                print(f"server RSS before:    {before / MiB:.0f} MiB")
                print(f"server RSS stalled:   {stalled / MiB:.0f} MiB (+{(stalled - before) / MiB:.0f} MiB)")
                print(f"in temp files:        {files} files, {on_disk / MiB:.0f} MiB")
            finally:
                for sock in sockets:
                    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
