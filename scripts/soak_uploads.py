#!/usr/bin/env python
"""Soak ``POST /v1/jobs``: N concurrent uploaders for S seconds, then check every job got through.

The same load and checks as ``tests/faults/test_concurrent_uploaders.py`` (the shared code is
``filejobs/testing/soak.py``), for longer or heavier runs. Each uploader thread uploads random 1-64 KiB
files in a loop (and now and then reads a job or the list); afterwards the script waits until no
job is queued or running and reads every accepted job back.

Without ``--url`` it starts its own ``filejobs serve`` (SQLite, ``--workers`` worker processes, any
``--env FILEJOBS_…=…``) in a temporary data directory and also searches that server's log for
"database is locked" and tracebacks. With ``--url`` it targets a server that is already running
(any database); give ``--api-key`` when it requires one.

Exit status 0 when there was no "database is locked", no 5xx, no transport error, no unexpected
answer and every accepted job succeeded; 1 otherwise.

    python -m scripts.soak_uploads --uploaders 50 --seconds 60
    python -m scripts.soak_uploads --uploaders 200 --seconds 600 --workers 4 --env FILEJOBS_RATE_LIMIT=0
    python -m scripts.soak_uploads --url http://127.0.0.1:8000 --api-key "$FILEJOBS_API_KEY"
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filejobs.testing import Server
from filejobs.testing.soak import KiB, SoakConfig, drain, locked_lines, run_uploaders, server_upload_quantiles


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploaders", type=int, default=50, help="concurrent uploader threads (default 50)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they upload (default 60)")
    parser.add_argument("--url", help="an already running server; without it, one is started")
    parser.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    parser.add_argument("--workers", type=int, default=2, help="FILEJOBS_WORKERS of a started server (2)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="more settings for a started server, e.g. FILEJOBS_RATE_LIMIT=0 (repeatable)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="a started server's data directory (default: a temp dir)"
    )
    parser.add_argument("--min-kib", type=int, default=1, help="smallest file (KiB, default 1)")
    parser.add_argument("--max-kib", type=int, default=64, help="largest file (KiB, default 64)")
    parser.add_argument("--processor", default="inspect", help="the jobs' processor (default inspect)")
    parser.add_argument("--poll-chance", type=float, default=0.25, help="chance of a read after an upload")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds to wait for the backlog")
    parser.add_argument("--no-drain", action="store_true", help="do not wait for the jobs to finish")
    args = parser.parse_args(argv)
    if args.url and (args.env or args.data_dir):
        parser.error("--env and --data-dir configure a started server; they make no sense with --url")
    if not 0 < args.min_kib <= args.max_kib:
        parser.error("need 0 < --min-kib <= --max-kib")
    return args


@contextlib.contextmanager
def target(args: argparse.Namespace) -> Iterator[tuple[str, Server | None]]:
    if args.url:
        yield args.url.rstrip("/"), None
        return
    env = {"FILEJOBS_WORKERS": str(args.workers)}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("FILEJOBS_"):
            raise SystemExit(f"--env wants FILEJOBS_NAME=VALUE, not {item!r}")
        env[name] = value
    with contextlib.ExitStack() as stack:
        root = (
            args.data_dir.parent
            if args.data_dir
            else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        data_dir = args.data_dir or root / "data"
        server = stack.enter_context(Server(data_dir, env=env, log_path=root / "soak-server.log"))
        print(f"started filejobs serve on {server.base_url} (data {data_dir}, {env})", flush=True)
        yield server.base_url, server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    failures: list[str] = []
    with target(args) as (base_url, server):
        config = SoakConfig(
            base_url,
            uploaders=args.uploaders,
            seconds=args.seconds,
            min_bytes=args.min_kib * KiB,
            max_bytes=args.max_kib * KiB,
            processor=args.processor,
            poll_chance=args.poll_chance,
            headers=headers,
        )
        print(f"{args.uploaders} uploaders for {args.seconds:g} s against {base_url} ...", flush=True)
        totals = run_uploaders(config)
        print(totals.report(), flush=True)
        quantiles = server_upload_quantiles(base_url, headers=headers)
        if quantiles:
            bounds = ", ".join(f"p{q * 100:g} <= {bound:g} s" for q, bound in quantiles.items())
            print(f"server side (body start to row recorded, histogram buckets): {bounds}")
        if not args.no_drain:
            drained = drain(base_url, totals.accepted, timeout=args.drain_timeout, headers=headers)
            rate = len(totals.accepted) / max(totals.seconds + drained.seconds, 1e-9)
            print(
                f"backlog of {drained.backlog} jobs drained in {drained.seconds:.1f} s; end to end "
                f"{rate:.1f} jobs/s: {dict(drained.statuses)}"
            )
            if drained.missing:
                failures.append(f"{len(drained.missing)} accepted jobs are gone, e.g. {drained.missing[:3]}")
            if drained.not_succeeded:
                failures.append(
                    f"{len(drained.not_succeeded)} jobs did not succeed: {drained.not_succeeded[:3]}"
                )
        if server is not None:
            log = server.log_text()
            locked = locked_lines(log)
            if locked:
                failures.append(f"'database is locked' {len(locked)}x in the server log: {locked[:3]}")
            if "Traceback" in log:
                failures.append(f"a traceback in the server log ({server.log_path})")
            if server.returncode is not None:
                failures.append(f"the server exited with {server.returncode}")
    if totals.locked:
        failures.append(f"'database is locked' in {len(totals.locked)} answers: {totals.locked[:3]}")
    if totals.five_xx:
        failures.append(f"{totals.five_xx} 5xx answers: {totals.server_errors[:3]}")
    if totals.transport_errors:
        failures.append(f"{len(totals.transport_errors)} transport errors: {totals.transport_errors[:3]}")
    if totals.unexpected:
        failures.append(f"{len(totals.unexpected)} unexpected answers: {totals.unexpected[:3]}")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("OK" if not failures else f"{len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
