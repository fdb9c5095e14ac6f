"""Claims of several jobs at once (``repository.claim_quick_jobs``, a worker thread's
``_run_taken``): on SQLite and PostgreSQL each light job on a small input claimed as ``claim_job``
claims it, in order, the others left untouched; in the worker, the quick jobs among the ids waiting
together are claimed together and run first, the first other is claimed alone after them, and the
rest go back to the queue unclaimed (their rows untouched: no running -> queued flicker)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
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


def test_claim_quick_jobs_claims_the_light_jobs_on_small_inputs_in_order(db: Database) -> None:
    jobs = [
        make_job(processor="inspect", file_size=10),
        make_job(processor="inspect", file_size=10, status=JobStatus.succeeded.value),
        make_job(processor="thumbnail", file_size=10),  # not light: left for a claim of its own
        make_job(processor="inspect", file_size=101),  # over the inline bound
        make_job(processor="inspect", file_size=10, run_after=utcnow() + timedelta(hours=1)),
        make_job(processor="hll", file_size=100),
    ]
    with db.write() as session:
        session.add_all(jobs)
    ids = [job.id for job in jobs]
    before = {job_id: row(db, job_id) for job_id in ids}

    def claim(job_ids: list[str]) -> list[str | None]:
        claims = repository.claim_quick_jobs(
            db, job_ids, owner=OWNER, lease_seconds=5, light=["inspect", "hll"], max_bytes=100
        )
        return [claim.id if claim else None for claim in claims]

    assert claim([*ids, "01-no-such-job"]) == [ids[0], None, None, None, None, ids[5], None]
    for job_id in (ids[0], ids[5]):
        got = row(db, job_id)
        assert (got.status, got.attempts, got.lease_owner) == ("running", 1, OWNER)
        assert got.lease_expires_at is not None
        assert got.lease_expires_at > utcnow()
    for job_id in ids[1:5]:  # untouched
        assert row(db, job_id).model_dump() == before[job_id].model_dump()
    assert claim(ids) == [None] * 6


def test_ids_waiting_together_quick_ones_claimed_together_first_others_alone_untouched(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[str]] = []
    ran: list[str] = []
    claim_quick_jobs = repository.claim_quick_jobs
    run_claimed, run_job = worker_module.run_claimed, worker_module.run_job

    def spy_claims(db: Database, job_ids: list[str], **kwargs: Any) -> Any:
        batches.append(list(job_ids))
        return claim_quick_jobs(db, job_ids, **kwargs)

    def spy_claimed(job_id: str, job: Any, ctx: Any) -> Any:
        ran.append(job_id)
        return run_claimed(job_id, job, ctx)

    def spy_alone(job_id: str, ctx: Any) -> Any:
        ran.append(job_id)
        return run_job(job_id, ctx)

    monkeypatch.setattr(repository, "claim_quick_jobs", spy_claims)
    monkeypatch.setattr(worker_module, "run_claimed", spy_claimed)
    monkeypatch.setattr(worker_module, "run_job", spy_alone)
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
    assert [job.attempts for job in jobs] == [1] * 4
    # Claimed once and finished once each: the heavy ones were never claimed and given back.
    assert len({job.version for job in jobs}) == 1
    assert batches == [ids]  # one claim for the four: it took the two light ones
    assert ran == [held, ids[1], ids[3], ids[0], ids[2]]  # the light ones, then the heavy ones alone
