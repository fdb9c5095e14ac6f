"""Claims of several jobs at once (``repository.claim_jobs``, a worker thread's ``_run_batch``): on
SQLite and PostgreSQL each id claimed as ``claim_job`` claims it, in order; in the worker, the ids
waiting together are claimed together, the quick (light) ones run first and one other after them,
and the other others go back to the queue with their attempt unspent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.jobs import worker as worker_module
from filejobs.jobs.worker import LocalWorker
from filejobs.models import JobStatus, utcnow
from filejobs.services import Services
from filejobs.testing import submit
from tests.jobs.helpers import make_job, row, wait_for_status
from tests.sample_processors import WHERE_GATE, WHERE_HELD
from tests.services import migrated_database

OWNER = "host:1:abc:0"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with migrated_database(request.param, tmp_path) as database:
        yield database


def test_claim_jobs_claims_each_queued_id_in_order(db: Database) -> None:
    jobs = [make_job(), make_job(status=JobStatus.succeeded.value), make_job()]
    with db.write() as session:
        session.add_all(jobs)
    ids = [job.id for job in jobs]
    claims = repository.claim_jobs(db, [*ids, "01-no-such-job"], owner=OWNER, lease_seconds=5)
    assert [claim.id if claim else None for claim in claims] == [ids[0], None, ids[2], None]
    for job_id in (ids[0], ids[2]):
        got = row(db, job_id)
        assert (got.status, got.attempts, got.lease_owner) == ("running", 1, OWNER)
        assert got.lease_expires_at is not None
        assert got.lease_expires_at > utcnow()
    assert row(db, ids[1]).status == "succeeded"
    assert repository.claim_jobs(db, ids, owner=OWNER, lease_seconds=5) == [None, None, None]


def test_ids_waiting_together_are_claimed_together_quick_ones_first(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[str]] = []
    ran: list[str] = []
    claim_jobs, run_claimed = repository.claim_jobs, worker_module.run_claimed

    def spy_claims(db: Database, job_ids: list[str], **kwargs: Any) -> Any:
        batches.append(list(job_ids))
        return claim_jobs(db, job_ids, **kwargs)

    def spy_runs(job_id: str, job: Any, ctx: Any) -> Any:
        ran.append(job_id)
        return run_claimed(job_id, job, ctx)

    monkeypatch.setattr(repository, "claim_jobs", spy_claims)
    monkeypatch.setattr(worker_module, "run_claimed", spy_runs)
    pool = LocalWorker(
        db=services.db,
        storage=services.storage,
        registry=services.registry,
        settings=services.settings,
        threads=1,
    )
    WHERE_HELD.clear()
    WHERE_GATE.clear()
    pool.start()
    try:
        held = submit(client, b"held\n", processor="where", params={"hold": True})["id"]
        pool.submit(held)
        assert WHERE_HELD.wait(10), "the held job did not start"  # the one thread is busy now
        kinds = ["where-heavy", "where", "where-heavy", "where"]
        ids = [submit(client, f"file {n}\n".encode(), processor=kind)["id"] for n, kind in enumerate(kinds)]
        for job_id in ids:
            pool.submit(job_id)
        WHERE_GATE.set()
        jobs = [wait_for_status(services.db, job_id, "succeeded", "failed") for job_id in ids]
    finally:
        WHERE_GATE.set()
        pool.stop(grace=0)
    assert [job.status for job in jobs] == ["succeeded"] * 4
    assert [job.attempts for job in jobs] == [1] * 4  # the one given back did not spend an attempt
    assert batches == [ids]  # one claim for the four; the one given back was claimed again alone
    assert ran == [ids[1], ids[3], ids[0]]  # the light ones, then one heavy; the other went back
