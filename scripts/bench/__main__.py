"""Run the benchmark suite: ``python -m scripts.bench`` (from the repository root).

Each group starts its own servers, runs filejobs and its baselines alternately (``--rounds``) and
reports medians; the table at the end gives every figure, its baselines, the ratios and the target.
``--smoke`` runs every group with tiny sizes in a minute or two: it proves the suite works and
measures nothing (CI runs it).

    python -m scripts.bench                      # everything (about 15 minutes on 2 cores)
    python -m scripts.bench --only upload,status # some groups
    python -m scripts.bench --smoke --json out.json
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from scripts.bench import common
from scripts.bench.common import Context, filesystem_of
from scripts.bench.report import Figure, machine, markdown, text_table, to_json

#: Group name → "module:function" taking a Context and returning Figures, in the order they run.
GROUPS = {
    "upload": "scripts.bench.figures.upload:run",  # 1 GiB MB/s vs dd/raw/tutorial, bytes written, RSS
    "latency": "scripts.bench.figures.upload:run_latency",  # last byte → 202 at 1 MiB and 1 GiB
    "concurrent": "scripts.bench.figures.concurrent:run",  # peak RSS, 16 x 64 MiB at once
    "small": "scripts.bench.figures.small_uploads:run",  # 1 KiB uploads/s at 16 connections
    "status": "scripts.bench.figures.status:run",  # status polls/s vs the tutorial's dict
    "jobs": "scripts.bench.figures.jobs:run",  # end-to-end jobs/s vs the accept rate
    "busy": "scripts.bench.figures.busy:run",  # status p99 while both cores run processors
    "listing": "scripts.bench.figures.listing:run",  # list latency at 100k rows, first/deep page
    "celery": "scripts.bench.figures.celery:run",  # the Celery backends' jobs/s
    "events": "scripts.bench.figures.events:run",  # change -> N SSE clients vs long-polls; idle cost
    "storage": "scripts.bench.figures.storage:run",  # S3 backend: 1 GiB vs boto3, RSS, tail, 1 KiB/s
    "webhooks": "scripts.bench.figures.webhooks:run",  # finished -> webhook vs SSE; an endpoint's accept cost
    "resumable": "scripts.bench.figures.resumable:run",  # 1 GiB via tus vs POST /v1/jobs; cut and resumed
    "reuse": "scripts.bench.figures.reuse:run",  # a batch again / 1 in 10 changed; dedup's upload cost
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default="", help=f"comma-separated groups ({', '.join(GROUPS)})")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check the suite, measure nothing")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure (default 3; smoke 1)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="work directory on the disk under test (default: a new temp directory, removed afterwards)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="filejobs serve --processes (HTTP processes) for every filejobs server (default 1)",
    )
    parser.add_argument(
        "--worker-process",
        action="store_true",
        help="FILEJOBS_WORKER_PROCESS=true for every filejobs server (the local pool in its own process)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    common.API_PROCESSES = max(1, args.processes)
    common.WORKER_PROCESS = args.worker_process
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s): {', '.join(unknown)}; choose from {', '.join(GROUPS)}")

    own = args.dir is None
    work = Path(tempfile.mkdtemp(prefix="filejobs-bench-", dir="/var/tmp")) if own else args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(work=work, smoke=args.smoke, rounds=args.rounds or (1 if args.smoke else 3))
    info = machine()
    ctx.say(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}, Python {info['python']}"
    )
    ctx.say(
        f"filejobs serve --processes {common.API_PROCESSES}"
        f"{', FILEJOBS_WORKER_PROCESS=true' if common.WORKER_PROCESS else ''}"
    )
    ctx.say(f"disk:    {work} [{filesystem_of(work)}]; rounds {ctx.rounds}{' (smoke)' if args.smoke else ''}")

    figures: list[Figure] = []
    failed: list[str] = []
    started = time.monotonic()
    try:
        for name in names:
            module, function = GROUPS[name].split(":")
            ctx.say(f"\n== {name} ==")
            t0 = time.monotonic()
            try:
                got = getattr(importlib.import_module(module), function)(ctx)
            except Exception:  # one broken group must not hide the others' figures
                traceback.print_exc()
                failed.append(name)
                continue
            figures.extend(got)
            ctx.say(f"   {name}: {len(got)} figure(s) in {time.monotonic() - t0:.0f} s")
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)

    print(markdown(figures) if args.markdown else text_table(figures))
    print(
        f"\n{len(figures)} figures in {time.monotonic() - started:.0f} s"
        + (" (smoke: sizes too small for the figures to mean anything)" if args.smoke else "")
    )
    if args.json:
        args.json.write_text(
            to_json(
                figures,
                {
                    "smoke": args.smoke,
                    "rounds": ctx.rounds,
                    "processes": common.API_PROCESSES,
                    "worker_process": common.WORKER_PROCESS,
                    "groups": names,
                    "failed": failed,
                },
            )
        )
    if failed:
        print(f"failed groups: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
