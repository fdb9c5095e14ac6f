"""Many processes race to claim the same jobs on PostgreSQL: the conditional UPDATE of
``claim_job`` gives each job to exactly one of them."""

from __future__ import annotations

import multiprocessing
import queue
import random
from collections import Counter
from typing import Any

import pytest

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.migrate import upgrade
from filejobs.settings import Settings
from tests.jobs.helpers import make_job

pytestmark = pytest.mark.scaleout

JOBS = 200
CLAIMERS = 8
TIMEOUT = 120.0


def claim_all(url: str, job_ids: list[str], owner: str, barrier: Any, results: Any) -> None:
    """One claimer process: every id in its own shuffled order, all claimers starting at once."""
    db = Database(url)
    try:
        ids = list(job_ids)
        random.Random(owner).shuffle(ids)
        db.ping()  # connect before the start line, so the race is on the claims themselves
        barrier.wait(timeout=TIMEOUT)
        won = [job_id for job_id in ids if repository.claim_job(db, job_id, owner=owner, lease_seconds=600)]
        results.put((owner, won))
    except BaseException as exc:
        results.put((owner, exc))
        raise
    finally:
        db.dispose()


def test_many_claimers_never_share_a_job(pg_url: str) -> None:
    url = Settings(database_url=pg_url).resolved_database_url
    upgrade(url)
    db = Database(url)
    try:
        job_ids = [repository.insert_job(db, make_job()).id for _ in range(JOBS)]

        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(CLAIMERS)
        results = context.Queue()
        owners = [f"claimer-host:{index}:race:0" for index in range(CLAIMERS)]
        processes = [
            context.Process(target=claim_all, args=(url, job_ids, owner, barrier, results), daemon=True)
            for owner in owners
        ]
        for process in processes:
            process.start()
        try:
            won: dict[str, list[str]] = {}
            for _ in processes:
                try:
                    owner, outcome = results.get(timeout=TIMEOUT)
                except queue.Empty:
                    pytest.fail(f"only {len(won)} of {CLAIMERS} claimers reported within {TIMEOUT:g} s")
                assert not isinstance(outcome, BaseException), f"{owner} failed: {outcome!r}"
                won[owner] = outcome
            for process in processes:
                process.join(timeout=30)
                assert process.exitcode == 0, f"a claimer exited with {process.exitcode}"
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
                    process.join(timeout=10)

        claims = Counter(job_id for ids in won.values() for job_id in ids)
        assert set(claims) == set(job_ids), f"{len(set(job_ids) - set(claims))} job(s) never claimed"
        assert [job_id for job_id, n in claims.items() if n > 1] == [], "a job was claimed twice"
        winners = {owner for owner, ids in won.items() if ids}
        assert len(winners) >= 2, f"no race happened: {winners} claimed everything"
        print(f"claims per claimer: {sorted(len(ids) for ids in won.values())}")

        # The rows agree: each is running once, owned by the claimer that won it.
        winner_of = {job_id: owner for owner, ids in won.items() for job_id in ids}
        for job_id in job_ids:
            job = repository.get_job(db, job_id)
            assert job is not None
            assert (job.status, job.attempts, job.lease_owner) == ("running", 1, winner_of[job_id])
    finally:
        db.dispose()
