"""Server-side ``Idempotency-Key`` on ``POST /v1/jobs`` (IETF httpapi draft, Stripe's semantics).

Per API key and Idempotency-Key: the first request makes the job (202); the same request again
is answered with that job (200, ``Idempotent-Replayed: true``); a different request with the same
key is 422; while the first is still uploading, 409 with ``Retry-After``. Failed requests free
the key; records expire after FILEJOBS_IDEMPOTENCY_TTL. Concurrent duplicates make one job.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col

from filejobs import keys
from filejobs.app import create_app
from filejobs.jobs import idempotency, intake, repository
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.sweeper import sweep
from filejobs.models import IdempotencyKey, utcnow
from filejobs.services import Services
from filejobs.settings import Settings
from filejobs.testing import Server, post_file
from tests.conftest import burst_worker, make_settings
from tests.jobs.helpers import process_gone, wait_until
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.security.helpers import (
    StreamedBody,
    accepted_id,
    asgi_call,
    assert_nothing_stored,
    assert_problem,
    idempotency_records,
    retry_after,
    stored_files,
    stored_uploads,
)

#: The request every test repeats: a sleep job (never run unless a test drains the queue).
BASE: dict[str, Any] = {
    "content": b"hello\n",
    "name": "a.txt",
    "processor": "sleep",
    "params": {"seconds": 0, "steps": 1},
}
#: Who holds a record made by this test process (alive as long as the test runs).
LIVE_HOLDER = f"{socket.gethostname()}:{os.getpid()}:test"


def post(client: TestClient, idem: str | bytes | None = "key-1", **changes: Any) -> httpx.Response:
    request = {**BASE, **changes}
    content = request.pop("content")
    return post_file(client, content, idempotency_key=idem, **request)


def record(services: Services, key: str = "key-1", scope: str = "") -> IdempotencyKey | None:
    with services.db.read() as session:
        found: IdempotencyKey | None = session.get(IdempotencyKey, (scope, key))
        return found


def hold(services: Services, key: str = "key-1", *, holder: str = LIVE_HOLDER, **kwargs: Any) -> Any:
    """An upload of ``holder`` holds ``key`` (as a request in progress would)."""
    values: dict[str, Any] = {"ttl": timedelta(hours=24), "lease_seconds": 60.0, **kwargs}
    claim = idempotency.begin(services.db, scope="", key=key, token="held-by-test", holder=holder, **values)
    assert isinstance(claim, idempotency.Claim)
    return claim


def app_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings, dispatcher=InMemoryDispatcher()), raise_server_exceptions=False)


# ---- replay, mismatch, scope ----------------------------------------------------------------


def test_the_same_request_again_answers_the_original_job(client: TestClient, services: Services) -> None:
    first = post(client)
    job_id = accepted_id(first)
    assert "idempotent-replayed" not in first.headers

    again = post(client)

    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == f"/v1/jobs/{job_id}"
    assert again.json() == client.get(f"/v1/jobs/{job_id}").json()
    assert_nothing_stored(services, uploads=1, jobs=1)
    stored = record(services)
    assert stored is not None
    assert (stored.state, stored.job_id) == ("done", job_id)

    # Later replays show the job as it is now.
    assert burst_worker(services).drain() == 1
    later = post(client)
    assert later.status_code == 200
    assert later.json()["id"] == job_id
    assert later.json()["status"] == "succeeded"
    assert_nothing_stored(services, uploads=1, jobs=1)


def test_equivalent_params_are_the_same_request(client: TestClient) -> None:
    """The fingerprint is of the validated params: key order and spelled-out defaults agree."""
    job_id = accepted_id(post(client, params={"seconds": 0, "steps": 1}))
    again = post(client, params={"steps": 1, "seconds": 0.0, "ignore_cancel": False})
    assert again.status_code == 200
    assert again.json()["id"] == job_id


@pytest.mark.parametrize(
    "change",
    [
        {"content": b"hello!\n"},
        {"content": b"hello\n" * 2},
        {"name": "b.txt"},
        {"processor": "upper", "params": None},
        {"params": {"seconds": 0, "steps": 2}},
    ],
    ids=["other-bytes", "other-size", "other-name", "other-processor", "other-params"],
)
def test_a_different_request_with_the_same_key_is_422_and_stores_nothing(
    client: TestClient, services: Services, change: dict[str, Any]
) -> None:
    job_id = accepted_id(post(client))
    uploads = stored_uploads(services)

    response = post(client, **change)

    body = assert_problem(response, 422)
    assert "Idempotency-Key" in body["detail"]
    assert stored_uploads(services) == uploads == [job_id]
    assert_nothing_stored(services, uploads=1, jobs=1)
    assert post(client).json()["id"] == job_id  # the key still names the first job


def test_a_different_secret_param_is_a_different_request(client: TestClient, services: Services) -> None:
    first = post(client, processor="secretive", params={"token": "one"})
    job_id = accepted_id(first)
    assert_problem(post(client, processor="secretive", params={"token": "two"}), 422)
    assert post(client, processor="secretive", params={"token": "one"}).json()["id"] == job_id
    stored = record(services)
    assert stored is not None
    assert "one" not in (stored.fingerprint or "")  # a hash, not the request


@pytest.mark.parametrize(
    "params",
    ['{"seconds": 0, "x": ' + "[" * 1000 + "]" * 1000 + "}", '{"seconds": 0, "steps": ' + "9" * 5000 + "}"],
    ids=["nested-1000-deep", "integer-of-5000-digits"],
)
def test_hostile_params_with_a_key_are_422_and_leave_the_key_free(
    client: TestClient, services: Services, params: str
) -> None:
    """Params that ``json.loads`` cannot take are refused before any fingerprint is made: 422, no
    record of the key, no file, no row; the key then works for a proper request."""
    response = client.post(
        "/v1/jobs",
        files={"file": ("a.txt", b"hello\n", "text/plain")},
        data={"processor": "sleep", "params": params},
        headers={"Idempotency-Key": "key-1"},
    )
    assert_problem(response, 422)
    assert idempotency_records(services.db) == []
    assert_nothing_stored(services, uploads=0, jobs=0)
    accepted_id(post(client))


def test_keys_are_scoped_per_api_key(client: TestClient, services: Services) -> None:
    alice = keys.create_key(services.db, "alice")[1]
    bob = keys.create_key(services.db, "bob")[1]

    mine = post_file(client, b"same\n", key=alice, idempotency_key="shared")
    theirs = post_file(client, b"same\n", key=bob, idempotency_key="shared")
    other_file = post_file(client, b"other\n", key=bob, idempotency_key="alices-key")

    assert accepted_id(mine) != accepted_id(theirs)
    accepted_id(other_file)  # a key Alice never used is Bob's to use
    assert post_file(client, b"same\n", key=alice, idempotency_key="shared").json()["id"] == mine.json()["id"]
    assert post_file(client, b"same\n", key=bob, idempotency_key="shared").json()["id"] == theirs.json()["id"]
    assert_nothing_stored(services, uploads=3, jobs=3)


# ---- in progress ----------------------------------------------------------------------------


def test_a_key_in_progress_is_409_before_the_body_is_read(client: TestClient, services: Services) -> None:
    hold(services)

    response = post(client)

    body = assert_problem(response, 409)
    assert "in progress" in body["detail"]
    assert retry_after(response) >= 1
    assert_nothing_stored(services, uploads=0, jobs=0)
    stored = record(services)
    assert stored is not None
    assert (stored.state, stored.token, stored.holder) == ("in_progress", "held-by-test", LIVE_HOLDER)

    big = StreamedBody(size=8 * 1024 * 1024)
    answer = asgi_call(client, "POST", "/v1/jobs", big, headers={"Idempotency-Key": "key-1"})
    assert answer.status == 409
    assert big.chunks_read == 0  # answered before a byte of the body was asked for


def test_a_key_held_by_a_live_process_elsewhere_stays_held(client: TestClient, services: Services) -> None:
    """On another host the holder's liveness is unknown: only its lease can free the key."""
    hold(services, holder="some-other-host:1:api")
    assert_problem(post(client), 409)


def test_a_key_released_by_its_holder_is_free(client: TestClient, services: Services) -> None:
    claim = hold(services)
    assert_problem(post(client), 409)

    idempotency.release(services.db, claim)

    accepted_id(post(client))


def test_a_key_whose_holder_process_died_is_taken_over(client: TestClient, services: Services) -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(child.stdout)
    assert process_gone(dead_pid)
    hold(services, holder=f"{socket.gethostname()}:{dead_pid}:api")

    job_id = accepted_id(post(client))

    stored = record(services)
    assert stored is not None
    assert (stored.state, stored.job_id) == ("done", job_id)
    assert stored.holder != f"{socket.gethostname()}:{dead_pid}:api"


def test_a_key_whose_lease_expired_is_taken_over(client: TestClient, services: Services) -> None:
    hold(services, now=utcnow() - timedelta(seconds=61), lease_seconds=60.0)  # a live holder, but silent

    job_id = accepted_id(post(client))

    stored = record(services)
    assert stored is not None
    assert stored.job_id == job_id


# ---- failures free the key ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"processor": "no-such-processor", "params": None}, 422),
        ({"params": {"seconds": -1}}, 422),
        ({"processor": "text-only", "params": None, "content": b"\x89PNG\r\n\x1a\n" + b"\0" * 64}, 415),
        ({"content": b""}, 422),
    ],
    ids=["unknown-processor", "bad-params", "unsupported-type", "empty-file"],
)
def test_a_failed_upload_releases_the_key(
    client: TestClient, services: Services, change: dict[str, Any], status: int
) -> None:
    assert_problem(post(client, **change), status)
    assert record(services) is None
    assert_nothing_stored(services, uploads=0, jobs=0)

    accepted_id(post(client))


def test_a_client_that_disconnects_mid_upload_releases_the_key(
    client: TestClient, services: Services
) -> None:
    body = StreamedBody(size=2 * 1024 * 1024, disconnect_after=3)

    answer = asgi_call(client, "POST", "/v1/jobs", body, headers={"Idempotency-Key": "key-1"})

    assert answer.status == 400  # nobody reads it; what matters is what is left behind
    assert body.chunks_read == 3
    assert record(services) is None
    assert_nothing_stored(services, uploads=0, jobs=0)
    accepted_id(post(client))


def test_an_upload_refused_by_a_limit_releases_the_key(data_dir: Path) -> None:
    with app_client(make_settings(data_dir, max_unfinished_jobs=1)) as client:
        services: Services = client.app_state["services"]
        accepted_id(post(client, idem=None))

        assert_problem(post(client), 429)
        assert record(services) is None

        assert burst_worker(services).drain() == 1
        accepted_id(post(client))


# ---- expiry ---------------------------------------------------------------------------------


def test_records_live_24_hours_by_default(client: TestClient, services: Services) -> None:
    accepted_id(post(client))
    stored = record(services)
    assert stored is not None
    assert stored.expires_at - stored.created_at == timedelta(hours=24)


def test_the_time_to_live_is_configurable(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEJOBS_IDEMPOTENCY_TTL", "90s")
    assert Settings(data_dir=data_dir).idempotency_ttl == timedelta(seconds=90)
    monkeypatch.setenv("FILEJOBS_IDEMPOTENCY_TTL", "PT2H")
    assert Settings(data_dir=data_dir).idempotency_ttl == timedelta(hours=2)

    with app_client(make_settings(data_dir, idempotency_ttl=timedelta(seconds=90))) as client:
        services: Services = client.app_state["services"]
        accepted_id(post(client))
        stored = record(services)
        assert stored is not None
        assert stored.expires_at - stored.created_at == timedelta(seconds=90)


def expire_now(services: Services, key: str = "key-1") -> None:
    """Move a record's expiry into the past, as the passing of its time to live would."""
    with services.db.write() as session:
        changed = session.exec(
            update(IdempotencyKey)
            .where(col(IdempotencyKey.key) == key)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        ).rowcount
        assert changed == 1


def test_an_expired_key_makes_a_new_job(client: TestClient, services: Services) -> None:
    first = accepted_id(post(client))
    expire_now(services)

    second = accepted_id(post(client, content=b"a new file\n"))  # not 422: the old record is gone

    assert second != first
    assert post(client, content=b"a new file\n").json()["id"] == second
    assert_problem(post(client), 422)  # the key now stands for the second request


def test_the_sweeper_deletes_expired_records(client: TestClient, services: Services) -> None:
    accepted_id(post(client, idem="old"))
    accepted_id(post(client, idem="young", content=b"young\n"))
    expire_now(services, "old")

    report = sweep(
        db=services.db, storage=services.storage, settings=services.settings, dispatcher=services.dispatcher
    )

    assert report.idempotency_expired == 1
    assert [r.key for r in idempotency_records(services.db)] == ["young"]


def test_a_key_whose_job_was_deleted_is_free_again(client: TestClient, services: Services) -> None:
    first = accepted_id(post(client))
    assert client.delete(f"/v1/jobs/{first}").status_code == 204

    second = accepted_id(post(client, content=b"another file\n"))  # not 422: the old job is gone

    assert second != first
    assert post(client, content=b"another file\n").json()["id"] == second
    assert_nothing_stored(services, uploads=1, jobs=1)


def test_a_job_deleted_while_its_replay_uploads_is_409_then_the_key_is_free(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the route cannot see coming: a DELETE lands between the key lookup (the job was
    there) and the replay's answer."""
    first = accepted_id(post(client))
    real_create_job = intake.create_job

    async def delete_meanwhile(**kwargs: Any) -> Any:
        plan = kwargs["idempotency"]
        if plan is not None and plan.existing is not None:
            repository.delete_job(services.db, plan.existing.job_id)
        return await real_create_job(**kwargs)

    monkeypatch.setattr(intake, "create_job", delete_meanwhile)

    gone = post(client)

    body = assert_problem(gone, 409)
    assert "deleted" in body["detail"]
    assert record(services) is None
    monkeypatch.setattr(intake, "create_job", real_create_job)
    second = accepted_id(post(client))
    assert second != first


# ---- the header itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", " ", " leading-space", "trailing-space ", "x" * 256, "clé".encode(), "tab\there"],
    ids=["empty", "blank", "leading-space", "trailing-space", "256-chars", "non-ascii", "control-char"],
)
def test_an_invalid_key_is_400(client: TestClient, services: Services, value: str | bytes) -> None:
    response = post(client, idem=value)

    body = assert_problem(response, 400)
    assert body["title"] == "Invalid Idempotency-Key"
    assert idempotency_records(services.db) == []
    assert_nothing_stored(services, uploads=0, jobs=0)


def test_a_key_of_255_printable_characters_is_fine(client: TestClient) -> None:
    value = "k" + "".join(chr(c) for c in range(0x20, 0x7F)) * 3
    value = value[:254] + "z"
    assert len(value) == 255
    job_id = accepted_id(post(client, idem=value))
    assert post(client, idem=value).json()["id"] == job_id


# ---- concurrent duplicates against a real server --------------------------------------------


@dataclass
class Attempts:
    statuses: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    replayed: list[bool] = field(default_factory=list)
    error: BaseException | None = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = {"FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS), "FILEJOBS_WORKERS": "1"}
    with Server(tmp_path / "data", env=env, log_path=tmp_path / "server.log") as running:
        yield running
    print(f"----- server log (tail) -----\n{running.log_tail(60)}")


@pytest.mark.e2e
def test_concurrent_duplicates_make_exactly_one_job(server: Server) -> None:
    clients, max_attempts = 16, 30
    content = os.urandom(1024 * 1024)  # big enough for uploads to overlap
    barrier = threading.Barrier(clients)
    results = [Attempts() for _ in range(clients)]

    def run(mine: Attempts) -> None:
        try:
            with server.client() as http:
                barrier.wait(timeout=30)
                for _ in range(max_attempts):
                    response = http.post(
                        "/v1/jobs",
                        files={"file": ("same.bin", content, "application/octet-stream")},
                        headers={"Idempotency-Key": "one-job-please"},
                    )
                    mine.statuses.append(response.status_code)
                    if response.status_code != 409:
                        mine.ids.append(response.json()["id"])
                        mine.replayed.append(response.headers.get("idempotent-replayed") == "true")
                        return
                    time.sleep(int(response.headers["retry-after"]))  # as the server asks
        except BaseException as exc:
            mine.error = exc

    threads = [threading.Thread(target=run, args=(mine,)) for mine in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert [r.error for r in results if r.error] == []

    statuses = [status for r in results for status in r.statuses]
    print("answers:", [r.statuses for r in results])
    assert set(statuses) <= {200, 202, 409}, statuses
    assert statuses.count(202) == 1, statuses
    assert all(len(r.ids) == 1 for r in results), [r.statuses for r in results]  # all done in time
    final_ids = {r.ids[0] for r in results}
    assert len(final_ids) == 1
    for r in results:  # the one 202 was the first answer; every other final answer is a replay
        assert r.replayed[0] == (r.statuses[-1] == 200)

    with sqlite3.connect(f"file:{server.data_dir / 'filejobs.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id FROM jobs").fetchall()
        records = conn.execute("SELECT state, job_id FROM idempotency_keys").fetchall()
    assert rows == [(final_ids.pop(),)]
    assert records == [("done", rows[0][0])]
    assert len(stored_files(server.data_dir, "uploads")) == 1
    wait_until(
        lambda: stored_files(server.data_dir, "tmp") == [],
        timeout=10,
        what="no upload temp file left",
    )
