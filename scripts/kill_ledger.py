#!/usr/bin/env python
"""Kill the service under a client that keeps a ledger, and count what became of every upload.

The same scenario and checks as ``tests/faults/test_kill_ledger.py`` (the shared code is
``filejobs/testing/ledger.py``), for longer runs and more kills. One client thread uploads files
one after another and records each attempt (``202`` with the job id, another answer, or no answer).
The kills are spread evenly over ``--seconds``, each at a moment when a job is running:

- ``--backend local``: a ``filejobs serve`` on SQLite with two worker processes, in a temporary
  data directory (or ``--dir``); each kill is a ``kill -9`` of the server while an upload is on its
  way (every other one aimed at the moment its row is committed and its answer not yet sent), then
  a restart on the same data directory.
- ``--backend celery``: an API and two concurrency-1 ``filejobs worker``s on a fresh PostgreSQL
  database (``--database-url`` for one of your own) and a queue of their own on Redis
  (``--broker-url``); each kill is a ``kill -9`` of the whole tree of the worker running a job (a
  fresh worker takes its place), except the middle one, which kills the API server.

With ``--idempotent`` every upload carries an ``Idempotency-Key`` and is sent again, the same,
until it is accepted: then no upload may leave a job the client does not know of (0 cut-off jobs),
and a retried upload must be answered with the job its first try made.

Afterwards it waits until nothing is queued or running, reads every job back and prints the ledger
totals: uploads, ``202``s, cut-off answers per kill, recovery times, rows, lost uploads. Exit status
0 when nothing was lost (every ``202`` ended ``succeeded``, at most one job per kill was made by an
upload whose answer was cut off, and it ended too); 1 otherwise; 2 when a service is unreachable.

    python -m scripts.kill_ledger --backend local --kills 5 --seconds 60
    python -m scripts.kill_ledger --backend local --kills 8 --seconds 90 --idempotent
    python -m scripts.kill_ledger --backend celery --kills 7 --seconds 120
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filejobs.testing import Cluster, ProcessError, Server, Unavailable, fresh_postgres_database
from filejobs.testing.brokers import cleanup_redis_queue, new_queue_name
from filejobs.testing.ledger import Plan, Report, local_env, run_celery, run_local


@contextlib.contextmanager
def workspace(directory: str | None) -> Iterator[Path]:
    if directory:
        root = Path(directory).resolve()
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="filejobs-kill-ledger-") as tmp:
        yield Path(tmp)


def local(args: argparse.Namespace, root: Path, plan: Plan) -> Report:
    server = Server(root / "data", env=local_env(workers=2), log_path=root / "server.log")
    try:
        server.start()
        return run_local(server, plan, uploader={"idempotent": args.idempotent})
    finally:
        server.stop()


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with fresh_postgres_database() as fresh:
        yield fresh


def celery(args: argparse.Namespace, root: Path, plan: Plan) -> Report:
    queue = new_queue_name()
    with database(args.database_url) as url:
        cluster = Cluster(root, database_url=url, broker_url=args.broker_url, queue=queue)
        try:
            return run_celery(
                cluster, plan, api_kill_at=args.kills // 2, uploader={"idempotent": args.idempotent}
            )
        finally:
            cluster.close()
            cleanup_redis_queue(args.broker_url, queue)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["local", "celery"], default="local")
    parser.add_argument("--kills", type=int, default=4, help="how many kill -9s (default 4)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the client uploads (60)")
    parser.add_argument(
        "--idempotent",
        action="store_true",
        help="send each file with an Idempotency-Key, again until accepted: no job may be left unknown",
    )
    parser.add_argument("--dir", help="keep the data and the logs here (default: a temporary directory)")
    parser.add_argument("--database-url", help="celery: a PostgreSQL database (default: a fresh one)")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/0", help="celery: the Redis broker")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the backlog")
    args = parser.parse_args()
    if args.kills < 1 or args.seconds <= 0:
        parser.error("--kills must be at least 1 and --seconds positive")

    plan = Plan(kills=args.kills, every=None, seconds=args.seconds, drain_timeout=args.drain_timeout)
    with workspace(args.dir) as root:
        try:
            report = (local if args.backend == "local" else celery)(args, root, plan)
        except Unavailable as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        except (AssertionError, ProcessError) as exc:  # a process did not start, a wait ran out
            print(f"the scenario broke off: {exc}", file=sys.stderr)
            if args.dir:
                print(f"logs in {root}", file=sys.stderr)
            return 1
        print(report.summary())
        if args.dir:
            print(f"logs in {root}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
