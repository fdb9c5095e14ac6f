"""Tenants: every job belongs to the key that made it; to any other key it does not exist.

Another key's job answers exactly as an unknown id does (same status, same problem body but for
the id), on every endpoint, and never appears in a list. Job ids are UUIDv7 with random bits
enough that knowing one id tells nothing about the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.db import Database
from filejobs.errors import NotFound
from filejobs.ids import new_job_id
from filejobs.jobs import repository
from filejobs.jobs.fast_read import JobReader
from filejobs.migrate import upgrade
from filejobs.services import Services
from filejobs.testing import bearer, submit
from tests.conftest import burst_worker
from tests.jobs.helpers import make_job, row
from tests.security.helpers import assert_problem


@pytest.fixture
def alice(services: Services) -> str:
    return keys.create_key(services.db, "alice")[1]


@pytest.fixture
def bob(services: Services) -> str:
    return keys.create_key(services.db, "bob")[1]


def operations(job_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}?wait=0.05"),
        ("GET", f"/v1/jobs/{job_id}/result"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
        ("DELETE", f"/v1/jobs/{job_id}"),
    ]


def not_found_shape(response: httpx.Response, job_id: str) -> dict[str, Any]:
    """The 404 body with the id masked, to compare with the one for an unknown id."""
    body = assert_problem(response, 404)
    assert "etag" not in response.headers
    return {k: v.replace(job_id, "<id>") if isinstance(v, str) else v for k, v in body.items()}


def listed_ids(client: TestClient, secret: str | None, **params: Any) -> list[str]:
    response = client.get("/v1/jobs", headers=bearer(secret), params=params)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["items"]]


def test_another_keys_job_is_404_everywhere_like_an_unknown_id(
    client: TestClient, services: Services, alice: str, bob: str
) -> None:
    succeeded = submit(client, key=alice)["id"]
    assert burst_worker(services).drain() == 1
    failed = submit(client, key=alice, processor="fail")["id"]
    assert burst_worker(services).drain() == 1
    queued = submit(client, key=alice)["id"]
    unknown = new_job_id()

    for job_id in (succeeded, failed, queued):
        for (method, path), (_, unknown_path) in zip(operations(job_id), operations(unknown), strict=True):
            theirs = client.request(method, path, headers=bearer(bob))
            missing = client.request(method, unknown_path, headers=bearer(bob))
            assert not_found_shape(theirs, job_id) == not_found_shape(missing, unknown), (method, path)

    # Bob's attempts changed nothing: every job is as Alice left it.
    assert row(services.db, succeeded).status == "succeeded"
    assert row(services.db, failed).status == "failed"
    assert row(services.db, queued).status == "queued"
    assert listed_ids(client, bob) == []
    for status in ("queued", "succeeded", "failed"):
        assert listed_ids(client, bob, status=status) == []
    assert listed_ids(client, bob, processor="inspect") == []
    assert sorted(listed_ids(client, alice)) == sorted([succeeded, failed, queued])


def test_the_owner_can_do_everything(client: TestClient, services: Services, alice: str, bob: str) -> None:
    auth = bearer(alice)
    bobs = submit(client, key=bob)["id"]
    done = submit(client, key=alice)["id"]
    assert burst_worker(services).drain() == 2
    job_id = submit(client, key=alice)["id"]

    assert client.get(f"/v1/jobs/{done}", headers=auth).json()["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{done}?wait=0.05", headers=auth).status_code == 200
    assert client.get(f"/v1/jobs/{done}/result", headers=auth).status_code == 200
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
    retried = client.post(f"/v1/jobs/{job_id}/retry", headers=auth)
    assert retried.status_code == 202
    assert retried.json()["status"] == "queued"
    key = keys.find_key(services.db, alice)
    assert key is not None
    for response in (
        retried,
        client.get("/v1/jobs", headers=auth),
        client.get(f"/v1/jobs/{done}", headers=auth),
    ):
        assert key.id not in response.text  # the owner is never shown
        assert "owner" not in response.text
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204
    assert client.delete(f"/v1/jobs/{done}", headers=auth).status_code == 204
    assert listed_ids(client, alice) == []
    assert listed_ids(client, bob) == [bobs]  # Bob's job was never touched


def test_lists_are_per_key_across_pages(client: TestClient, alice: str, bob: str) -> None:
    mine = [submit(client, key=alice)["id"] for _ in range(5)]
    theirs = [submit(client, key=bob)["id"] for _ in range(3)]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", headers=bearer(alice), params=params).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(mine, reverse=True)
    assert sorted(listed_ids(client, bob)) == sorted(theirs)


def test_a_waiting_request_of_another_key_learns_nothing(client: TestClient, alice: str, bob: str) -> None:
    job_id = submit(client, key=alice)["id"]
    etag = client.get(f"/v1/jobs/{job_id}", headers=bearer(alice)).headers["etag"]

    response = client.get(f"/v1/jobs/{job_id}?wait=0.05", headers={**bearer(bob), "If-None-Match": etag})

    assert_problem(response, 404)


def test_anonymous_jobs_are_invisible_to_keys(client: TestClient, services: Services) -> None:
    anonymous = submit(client)["id"]  # made while the service was open
    _key, alice = keys.create_key(services.db, "alice")

    assert listed_ids(client, alice) == []
    for method, path in operations(anonymous):
        assert_problem(client.request(method, path, headers=bearer(alice)), 404)
    assert repository.get_job(services.db, anonymous) is not None
    # and a key's jobs are not the anonymous caller's: the row records the key
    mine = submit(client, key=alice)["id"]
    key = keys.find_key(services.db, alice)
    assert key is not None
    assert row(services.db, mine).owner == key.id
    assert row(services.db, anonymous).owner == ""


def test_jobs_of_a_revoked_key_are_reachable_by_nobody(
    client: TestClient, services: Services, alice: str, bob: str
) -> None:
    job_id = submit(client, key=alice)["id"]
    keys.revoke_key(services.db, "alice")

    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(alice)).status_code == 401
    assert_problem(client.get(f"/v1/jobs/{job_id}", headers=bearer(bob)), 404)
    assert listed_ids(client, bob) == []


# ---- job ids --------------------------------------------------------------------------------


def test_job_ids_are_unique_version_7_and_mostly_random() -> None:
    """UUIDv7 (RFC 9562): 48-bit milliseconds, 4-bit version, 12-bit ``rand_a``, 2-bit variant,
    62-bit ``rand_b``. Here ``rand_a`` is a counter seeded at random each millisecond, so every
    id carries 62 fresh random bits, and the first id of each millisecond 11 more."""
    ids = [new_job_id() for _ in range(1000)]
    parsed = [uuid.UUID(value) for value in ids]

    assert len(set(ids)) == 1000
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    assert all(str(p) == value for p, value in zip(parsed, ids, strict=True))  # canonical form
    assert ids == sorted(ids)  # time-ordered, which keyset pagination relies on
    assert len({value.replace("-", "")[-18:] for value in ids}) == 1000  # no two share a tail
    rand_b = [p.int & ((1 << 62) - 1) for p in parsed]
    assert len(set(rand_b)) == 1000
    for bit in range(62):  # every random bit takes both values: none is stuck or derived
        assert len({(value >> bit) & 1 for value in rand_b}) == 2, bit


def test_ids_given_by_the_api_are_version_7(client: TestClient) -> None:
    first, second = (submit(client)["id"] for _ in range(2))
    assert uuid.UUID(first).version == uuid.UUID(second).version == 7
    assert (uuid.UUID(first).int ^ uuid.UUID(second).int) & ((1 << 62) - 1)  # random parts differ


# ---- the same work for another key's job as for an unknown id ------------------------------


@pytest.fixture
def traced_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Database, list[str]]]:
    """A database whose every SQLite connection (the ORM's, raw DBAPI ones and the status poll's
    own) reports each statement it runs, with its values, to the list."""
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)  # the status poll's connections
    monkeypatch.setattr(sqlite3.dbapi2, "connect", traced)  # SQLAlchemy's
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    db = Database(url)
    try:
        yield db, statements
    finally:
        db.dispose()


def statements_of(statements: list[str], call: Callable[[str], object], job_id: str) -> list[str]:
    """The statements ``call(job_id)`` runs, but for transaction control, with ``job_id`` masked."""
    del statements[:]
    with contextlib.suppress(NotFound):
        assert call(job_id) is None  # a read finds nothing, a change is refused (404)
    skipped = ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")
    return [s.replace(job_id, "<id>") for s in statements if not s.lstrip().upper().startswith(skipped)]


def test_another_keys_job_and_an_unknown_id_run_the_same_single_query(
    traced_db: tuple[Database, list[str]],
) -> None:
    """The 404 for another key's job must not take longer than for an unknown id (a timing oracle,
    issue 14 item 13): every read and change by id is one statement filtered by id *and* owner, the
    same for both, so the database finds no row either way and nothing is built from one."""
    db, statements = traced_db
    theirs = repository.insert_job(db, make_job(owner="alice")).id
    unknown = new_job_id()
    reader = JobReader(db)
    try:
        calls: dict[str, Callable[[str], object]] = {
            "reader.get": lambda job_id: reader.get(job_id, owner="bob"),
            "reader.aget": lambda job_id: asyncio.run(reader.aget(job_id, owner="bob")),
            "get_job": lambda job_id: repository.get_job(db, job_id, owner="bob"),
            "cancel_job": lambda job_id: repository.cancel_job(db, job_id, owner="bob"),
            "retry_job": lambda job_id: repository.retry_job(db, job_id, max_attempts=3, owner="bob"),
            "delete_job": lambda job_id: repository.delete_job(db, job_id, owner="bob"),
        }
        for name, call in calls.items():
            for_theirs = statements_of(statements, call, theirs)
            for_unknown = statements_of(statements, call, unknown)
            assert for_theirs == for_unknown, name
            [query] = for_theirs
            assert "'bob'" in query, f"{name}: the owner is not part of the query: {query}"
    finally:
        reader.close()
    assert repository.get_job(db, theirs, owner="alice") is not None  # Bob changed nothing
