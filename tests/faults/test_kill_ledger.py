"""Ledger tests: a client uploads continuously while the service is ``kill -9``'d and restarted
several times. Every upload answered ``202`` ends ``succeeded`` (lost = 0); a job whose ``202`` was
cut off by a kill exists for at most one upload per kill, and ends too (none at all when the client
sends an Idempotency-Key and retries). The same with the Celery backend, killing the workers that
run jobs (and the API once).

The uploader, its ledger, the kill scenarios and the verdict are in
:mod:`filejobs.testing.ledger` (``scripts/kill_ledger.py`` runs them for longer). Kills happen
after a number of further ``202`` answers each time, at a moment when a job is running; every wait
is bounded and polls real state (the ledger, the API, the job rows, the worker logs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from filejobs.testing import Cluster, Server
from filejobs.testing.ledger import Plan, Report, local_env, run_celery, run_local
from filejobs.testing.s3 import S3Bucket
from tests.scaleout import conftest as scaleout

# The scale-out fixtures (a fresh PostgreSQL database, the machine's broker with a queue of the
# test's own, a cluster that is always killed and whose logs are printed), from their conftest.
pg_url = scaleout.pg_url
queue_name = scaleout.queue_name
broker_url = scaleout.broker_url
make_cluster = scaleout.make_cluster
cluster = scaleout.cluster
s3_cluster = scaleout.s3_cluster

pytestmark = pytest.mark.e2e


def verdict(report: Report, kills: int) -> None:
    print(report.summary())
    assert report.problems == [], report.summary()
    assert len(report.kills) == kills
    assert report.accepted, "no upload was accepted"
    # The kills really hit work in progress (else they prove little).
    assert all(kill.running for kill in report.kills), [k.running for k in report.kills]
    assert sum(report.cut_off().values()) <= kills


@pytest.fixture
def storage_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The data directory (default), or, parametrized indirectly with "s3", a test bucket."""
    if getattr(request, "param", "local") == "s3":
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        return bucket.env
    return {}


@pytest.fixture
def server(tmp_path: Path, storage_env: dict[str, str]) -> Iterator[Server]:
    env = {**local_env(workers=2), **storage_env}
    started = Server(tmp_path / "data", env=env, log_path=tmp_path / "server.log")
    try:
        yield started.start()
    finally:
        started.stop()
        print(f"----- server log (tail) -----\n{started.log_tail(80)}")


@pytest.mark.parametrize(
    ("storage_env", "idempotent"),
    [("local", False), ("local", True), ("s3", False)],
    ids=["plain", "idempotency-key", "s3"],
    indirect=["storage_env"],
)
def test_kill9_the_server_while_uploading_loses_nothing(server: Server, idempotent: bool) -> None:
    """Local backend (SQLite, two worker processes): four kill -9s of the server, each while jobs
    run and an upload is on its way (the first and third at the moment its row is committed and its
    answer not yet sent), each followed by a restart on the same data directory (a new port).

    With an Idempotency-Key on every upload, and each upload sent again until accepted, an answer
    cut off by a kill is recovered by the retry (the job the first try made, answered 200): no job
    is left that the client does not know of."""
    report = run_local(server, Plan(kills=4, every=20, drain_timeout=60), uploader={"idempotent": idempotent})
    verdict(report, kills=4)
    if idempotent:
        assert not report.orphans, report.summary()
    for kill in report.kills:
        assert kill.recovery_seconds < 30, kill


@pytest.mark.scaleout
@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_kill9_workers_and_the_api_while_uploading_loses_nothing(cluster: Cluster) -> None:
    """Celery backend (PostgreSQL, Redis, two concurrency-1 workers): three kill -9s of the whole
    tree of the worker running a job (a fresh worker replaces it), and one of the API server (it
    restarts on a new port). Worker kills never disturb an upload."""
    report = run_celery(cluster, Plan(kills=4, every=15, drain_timeout=60), api_kill_at=2)
    verdict(report, kills=4)
    assert [kill.what for kill in report.kills].count("api") == 1
    for kill in report.kills:
        # A lease (2 s) and a sweep (0.5 s) after the kill, with room for a loaded machine.
        assert kill.recovery_seconds < 30, kill


@pytest.mark.scaleout
def test_kill9_workers_and_the_api_on_s3_loses_nothing(s3_cluster: Cluster) -> None:
    """The same on object storage: API and workers with data directories of their own, the files
    in a bucket; a job killed with its worker is run again from the same object."""
    report = run_celery(s3_cluster, Plan(kills=4, every=15, drain_timeout=60), api_kill_at=2)
    verdict(report, kills=4)
    for kill in report.kills:
        assert kill.recovery_seconds < 30, kill
