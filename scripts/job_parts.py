"""The smallest CPU each part of a trivial job costs, measured alone: no HTTP, no other thread.

The jobs figure (``python -m scripts.bench --only jobs``) runs 1 KiB ``inspect`` jobs while their
uploads are accepted; this script times the parts of running one such job, each on its own in
this process, against a fresh SQLite database and data directory (``--work``, default a temporary
directory), so a note can say which part is the floor:

* ``claim``: :func:`repository.claim_job` (one ``UPDATE … RETURNING`` in its own transaction);
* ``finish x8``: :func:`repository.succeed_in` for 8 jobs in one transaction (as the group
  committer batches them), per job; ``one savepoint``: as the group committer writes them now
  (:func:`group_commit._write_finals`), ``each savepoint``: one savepoint per job, as before;
* ``workspace``: the attempt's workspace, ``fetch_input`` and ``output_dir(create=False)``;
* ``child round trip``: one :class:`ChildProcess` (persistent, as a worker thread's) running
  ``inspect`` on a 1 KiB file: the parent's CPU (encode, write, wait, decode) and the child's;
* ``inspect in-process``: the processor's ``run`` alone on the same file (no child, no protocol);
* ``inline call``: :func:`~filejobs.jobs.inline.run_inline` on the same file (what a worker thread
  does instead of the child round trip for a light processor on a small input);
* ``run_job``: the whole of a worker thread's job (claim, workspace, child or inline call, the
  finish handed to a :class:`Finisher`), one thread, this process's CPU (both threads) and the
  child's; with ``FILEJOBS_INLINE_MAX_BYTES`` 0 (the child) and as set (inline).

CPU is ``time.thread_time`` of the measuring thread (``process_time`` for ``run_job``: the
finisher's thread too), and the child's user + system time from psutil; per job, median of
``--rounds`` rounds of ``--jobs`` jobs.

    python -m scripts.job_parts --jobs 500 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs.executor import ChildProcess, Control
from filejobs.jobs.finisher import Finisher, Write
from filejobs.jobs.group_commit import _write_final, _write_finals
from filejobs.jobs.inline import run_inline
from filejobs.jobs.messages import RunRequest
from filejobs.jobs.runner import RunContext, run_job
from filejobs.migrate import upgrade
from filejobs.processors.base import Context, Limits
from filejobs.processors.registry import build_registry
from filejobs.settings import Settings
from filejobs.storage import LocalStorage
from filejobs.testing import make_job

OWNER = "job-parts:0"
BATCH = 8
BODY = (b"filejobs benchmark: a small text file, the same for every app.\n" * 17)[:1024]


class Bench:
    """A fresh database and data directory under ``work``, and the things a worker thread holds."""

    def __init__(self, work: Path) -> None:
        self.settings = Settings(data_dir=work)
        url = self.settings.resolved_database_url
        upgrade(url)
        self.db = Database(url)
        self.storage = LocalStorage(work)
        self.registry = build_registry()
        self.spec = self.registry.get("inspect").spec  # type: ignore[union-attr]

    def queued(self, count: int) -> list[str]:
        """``count`` queued ``inspect`` jobs, each with its 1 KiB upload stored."""
        ids = []
        for _ in range(count):
            job = repository.insert_job(self.db, make_job(file_size=len(BODY)))
            self.storage.path(job.storage_key).write_bytes(BODY)
            ids.append(job.id)
        return ids

    def claimed(self, count: int) -> list[str]:
        ids = self.queued(count)
        for job_id in ids:
            assert repository.claim_job(self.db, job_id, owner=OWNER, lease_seconds=60) is not None
        return ids

    def request(self, job_id: str) -> RunRequest:
        return RunRequest(
            spec=self.spec,
            input=str(self.storage.path(f"uploads/{job_id}")),
            output_dir=str(self.storage.path(f"outputs/{job_id}/1")),
            file_name="small.txt",
            content_type="text/plain",
            limits=Limits(memory_bytes=self.settings.job_memory_limit),
        )


def child_cpu(child: ChildProcess) -> float:
    assert child.pid is not None
    times = psutil.Process(child.pid).cpu_times()
    return times.user + times.system


def finish_of(job_id: str) -> Write:
    """The final status of ``job_id`` (claimed by :data:`OWNER`) as the worker hands it over."""
    params = repository.succeeded_params(
        job_id,
        owner=OWNER,
        result={"size": 1024},
        output_key=None,
        output_name=None,
        output_content_type=None,
    )
    return lambda session: repository.succeed_in(session, params, max_pending_webhooks=100)


def per_job(count: int, run: Callable[[], object], clock: Callable[[], float] = time.thread_time) -> float:
    """Microseconds of ``clock`` per job for ``run`` (which does ``count`` jobs)."""
    start = clock()
    run()
    return (clock() - start) / count * 1e6


def round_of(bench: Bench, count: int, child: ChildProcess) -> dict[str, float]:
    """One round of every part, ``count`` jobs each; microseconds per job by part."""
    got: dict[str, float] = {}

    ids = bench.queued(count)
    got["claim"] = per_job(
        count, lambda: [repository.claim_job(bench.db, i, owner=OWNER, lease_seconds=60) for i in ids]
    )

    def finish_all(ids: list[str], savepoints: str) -> Callable[[], None]:
        def run() -> None:
            for at in range(0, count, BATCH):
                with bench.db.write() as session:
                    writes = [finish_of(job_id) for job_id in ids[at : at + BATCH]]
                    written: list[bool | None]
                    if savepoints == "none":
                        written = [write(session) for write in writes]
                    elif savepoints == "one":
                        written = _write_finals(session, writes)
                    else:
                        written = [_write_final(session, write) for write in writes]
                    assert all(written)

        return run

    got[f"finish x{BATCH}"] = per_job(count, finish_all(ids, "none"))
    for savepoints in ("one", "each"):
        got[f"finish x{BATCH}, {savepoints} savepoint"] = per_job(
            count, finish_all(bench.claimed(count), savepoints)
        )

    def workspaces() -> None:
        for job_id in ids:
            with bench.storage.workspace(job_id, 1) as workspace:
                workspace.fetch_input(f"uploads/{job_id}")
                workspace.output_dir(create=False)

    got["workspace"] = per_job(count, workspaces)

    requests = [bench.request(job_id) for job_id in ids]

    def round_trips() -> None:
        for request in requests:
            outcome = child.run(request, tick=lambda p, m: Control.CONTINUE, timeout=60, cancel_grace=1)
            assert outcome.kind == "done", outcome

    before = child_cpu(child)
    got["child round trip: parent"] = per_job(count, round_trips)
    got["child round trip: child"] = (child_cpu(child) - before) / count * 1e6

    processor = bench.registry.get("inspect").processor  # type: ignore[union-attr]

    def in_process() -> None:
        for request in requests:
            ctx = Context(
                input_path=Path(request.input), output_dir=Path(request.output_dir), file_name="small.txt",
                content_type="text/plain", progress=lambda f, m: None, cancelled=lambda: False,
            )  # fmt: skip
            processor().run(ctx, processor.Params())

    got["inspect in-process"] = per_job(count, in_process)

    def inline_calls() -> None:
        for request in requests:
            outcome = run_inline(request, tick=lambda p, m: Control.CONTINUE, timeout=60)
            assert outcome.kind == "done", outcome

    got["inline call (run_inline)"] = per_job(count, inline_calls)

    for where, max_bytes in (("child", 0), ("inline", bench.settings.inline_max_bytes)):
        finisher = Finisher(bench.db)
        ctx = RunContext(
            db=bench.db, storage=bench.storage, registry=bench.registry,
            settings=bench.settings.model_copy(update={"inline_max_bytes": max_bytes}),
            owner=OWNER, child=child, finisher=finisher,
        )  # fmt: skip
        ids = bench.queued(count)
        before = child_cpu(child)

        def whole(ids: list[str] = ids, ctx: RunContext = ctx, finisher: Finisher = finisher) -> None:
            for job_id in ids:
                assert run_job(job_id, ctx).finishing
            finisher.close()  # waits for the last commits

        got[f"run_job ({where}): worker + finisher"] = per_job(count, whole, time.process_time)
        got[f"run_job ({where}): child"] = (child_cpu(child) - before) / count * 1e6
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per part per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, help="data directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="job-parts-", dir=args.work) as work:
        bench = Bench(Path(work))
        child = ChildProcess()
        child.start()
        try:
            round_of(bench, min(args.jobs, 50), child)  # warm up: imports, caches, the child
            rounds = [round_of(bench, args.jobs, child) for _ in range(args.rounds)]
        finally:
            child.kill()
            bench.db.dispose()
    print(f"CPU per job (µs), median of {args.rounds} rounds of {args.jobs}; load {psutil.getloadavg()}")
    for part in rounds[0]:
        values = [r[part] for r in rounds]
        low, high = min(values), max(values)
        print(f"  {part:32s} {statistics.median(values):8.0f}   ({low:.0f}-{high:.0f})")


if __name__ == "__main__":
    main()
