"""``POST /v1/jobs/by-hash``: many uploads by hash in one request, each item answered as
``POST /v1/jobs`` by hash would have been (issue 19)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.api.routes.by_hash import MAX_BODY, MAX_ITEMS
from filejobs.services import Services
from filejobs.settings import Settings
from filejobs.testing import bearer, submit
from tests.conftest import burst_worker, make_settings
from tests.jobs.helpers import row

A = b"first scan\n"
B = b"second scan\n"
SHA_A = hashlib.sha256(A).hexdigest()
SHA_B = hashlib.sha256(B).hexdigest()
UNKNOWN = hashlib.sha256(b"never sent").hexdigest()


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir, rate_limit=0, reuse=True, inline_upload_bytes=0)


@pytest.fixture
def alice(services: Services) -> str:
    return keys.create_key(services.db, "alice")[1]


@pytest.fixture
def bob(services: Services) -> str:
    return keys.create_key(services.db, "bob")[1]


def batch(client: TestClient, items: list[dict[str, Any]], key: str | None = None) -> httpx.Response:
    return client.post("/v1/jobs/by-hash", json={"items": items}, headers=bearer(key))


def job_count(services: Services) -> int:
    from sqlmodel import func, select

    from filejobs.models import Job

    with services.db.read() as session:
        return int(session.exec(select(func.count()).select_from(Job)).one())


def test_mixed_known_and_unknown_hashes_are_answered_item_by_item(
    client: TestClient, services: Services
) -> None:
    first_a = submit(client, A, processor="upper")["id"]
    submit(client, B)
    response = batch(
        client,
        [
            {
                "file_sha256": SHA_A,
                "file_name": "a.txt",
                "file_size": len(A),
                "processor": "upper",
                "reuse": False,
            },
            {"file_sha256": UNKNOWN, "file_name": "new.txt"},
            {"file_sha256": SHA_B.upper(), "file_name": "b.txt"},
        ],
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["status"] for item in items] == [202, 428, 202]

    made = items[0]["job"]
    assert made["status"] == "queued"
    assert made["processor"] == "upper"
    assert made["file"]["name"] == "a.txt"
    assert made["file"]["sha256"] == SHA_A
    assert row(services.db, made["id"]).storage_key == f"uploads/{first_a}"  # the stored bytes, shared

    assert items[1]["problem"]["status"] == 428
    assert items[1]["problem"]["send_file"] is True
    assert "job" not in items[1]
    assert items[2]["job"]["file"]["sha256"] == SHA_B

    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{made['id']}/result").content == A.upper()


def test_a_kept_result_is_reused_and_an_item_key_replays_its_job(
    client: TestClient, services: Services
) -> None:
    source = submit(client, A, processor="upper")["id"]
    burst_worker(services).drain()
    item = {"file_sha256": SHA_A, "file_name": "a.txt", "processor": "upper", "idempotency_key": "run-1/a"}
    first = batch(client, [item]).json()["items"][0]
    assert first["status"] == 202
    assert first["job"]["status"] == "succeeded"
    assert first["job"]["reused_from"] == source
    assert first["job"]["attempts"] == 0

    again = batch(client, [item]).json()["items"][0]
    assert again["status"] == 200
    assert again["replayed"] is True
    assert again["job"]["id"] == first["job"]["id"]

    # The same key for another request: 422 for that item alone.
    other = batch(client, [{**item, "processor": "inspect"}, {"file_sha256": SHA_A}]).json()["items"]
    assert [i["status"] for i in other] == [422, 202]
    assert "different request" in other[0]["problem"]["detail"]


def test_another_keys_hash_is_send_the_bytes_as_for_unknown_content(
    client: TestClient, services: Services, alice: str, bob: str
) -> None:
    submit(client, A, key=alice)
    before = job_count(services)
    response = batch(client, [{"file_sha256": SHA_A}, {"file_sha256": UNKNOWN}], key=bob)
    assert response.status_code == 200
    theirs, unknown = response.json()["items"]
    assert theirs == unknown  # the same answer, word for word
    assert theirs["status"] == 428
    assert job_count(services) == before
    assert batch(client, [{"file_sha256": SHA_A}], key=alice).json()["items"][0]["status"] == 202


def test_per_item_problems_leave_the_other_items_alone(client: TestClient, services: Services) -> None:
    submit(client, A)
    items = batch(
        client,
        [
            {"file_sha256": SHA_A, "processor": "no-such-processor"},
            {"file_sha256": SHA_A, "processor": "upper", "params": {"nope": 1}},
            {"file_sha256": SHA_A, "file_size": len(A) + 1},
            {"file_sha256": SHA_A},
        ],
    ).json()["items"]
    assert [item["status"] for item in items] == [422, 422, 422, 202]
    assert "no-such-processor" in items[0]["problem"]["detail"]
    assert items[1]["problem"]["errors"]
    assert job_count(services) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"items": []}, 422),
        ({"items": [{"file_sha256": SHA_A}] * (MAX_ITEMS + 1)}, 422),
        ({"items": [{"file_sha256": "abc"}]}, 422),
        ({"items": [{"file_sha256": "g" * 64}]}, 422),
        ({"items": [{"file_sha256": SHA_A, "file_size": -1}]}, 422),
        ({"items": [{"file_sha256": SHA_A, "unknown": 1}]}, 422),
        (
            {
                "items": [
                    {"file_sha256": SHA_A, "idempotency_key": "k"},
                    {"file_sha256": SHA_B, "idempotency_key": "k"},
                ]
            },
            422,
        ),
        ({"items": [{"file_sha256": SHA_A, "idempotency_key": "bad\nkey"}]}, 422),
        ({"things": []}, 422),
        ([{"file_sha256": SHA_A}], 422),
    ],
)
def test_a_bad_body_is_one_4xx_and_makes_no_job(
    client: TestClient, services: Services, body: Any, status: int
) -> None:
    submit(client, A)
    submit(client, B)
    response = client.post("/v1/jobs/by-hash", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert job_count(services) == 2


def test_not_json_too_large_and_wrong_type_are_refused(client: TestClient) -> None:
    not_json = client.post(
        "/v1/jobs/by-hash", content=b"{items", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    form = client.post("/v1/jobs/by-hash", files={"file_sha256": (None, SHA_A)})
    assert form.status_code == 415
    huge = b'{"items": [{"file_sha256": "' + b"a" * MAX_BODY + b'"}]}'
    too_large = client.post("/v1/jobs/by-hash", content=huge, headers={"content-type": "application/json"})
    assert too_large.status_code == 413
    for response in (not_json, form, too_large):
        assert response.headers["content-type"] == "application/problem+json"


def test_every_item_counts_against_the_keys_rate_limit(tmp_path: Path) -> None:
    from filejobs.app import create_app
    from filejobs.jobs.dispatch import InMemoryDispatcher

    settings = make_settings(
        tmp_path / "data", rate_limit=0.001, rate_burst=5, reuse=True, inline_upload_bytes=0
    )
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services: Services = client.app_state["services"]
        key = keys.create_key(services.db, "carol")[1]
        submit(client, A, key=key)  # one of the 5 tokens
        response = batch(client, [{"file_sha256": SHA_A}] * 6, key=key)  # the request's: the first item's
        assert response.status_code == 200
        items = response.json()["items"]
        assert [item["status"] for item in items] == [202, 202, 202, 202, 429, 429]
        assert items[4]["problem"]["retry_after"] >= 1
        assert batch(client, [{"file_sha256": SHA_A}], key=key).status_code == 429  # no token left


def test_the_key_must_be_valid_before_the_body_is_read(client: TestClient, alice: str) -> None:
    response = client.post(
        "/v1/jobs/by-hash", content=b"not even json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


def test_other_methods_are_405_naming_post_and_json_types_are_strict(client: TestClient) -> None:
    for method in ("GET", "DELETE", "PUT", "OPTIONS"):
        response = client.request(method, "/v1/jobs/by-hash")
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST"
    for item in ({"file_sha256": SHA_A, "reuse": 0}, {"file_sha256": SHA_A, "file_size": "11"}):
        assert batch(client, [item]).status_code == 422, item


def test_a_full_batch_works_on_a_few_items_at_once(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 items do not take the process's thread pool (and database connections) from every
    other request: at most ITEMS_AT_ONCE are worked on at a time."""
    import asyncio

    from filejobs.api.routes import by_hash

    submit(client, A)
    running = peak = 0
    real = by_hash.submit_by_hash

    async def counted(**kwargs: Any) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.001)  # let the other items start, if they may
            return await real(**kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(by_hash, "submit_by_hash", counted)
    items = [{"file_sha256": SHA_A, "file_name": f"a{n}.txt"} for n in range(MAX_ITEMS)]
    response = batch(client, items)
    assert response.status_code == 200, response.text
    assert [item["status"] for item in response.json()["items"]] == [202] * MAX_ITEMS
    assert peak == by_hash.ITEMS_AT_ONCE


def test_replays_are_read_together_and_answer_as_the_single_path(
    client: TestClient, services: Services, alice: str, bob: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch sent again (a re-run) is answered from one read of its keys and jobs; anything the
    read cannot tell alone (another request under the key, no ``file_size``, a deleted job, another
    key's items) goes the single path, with the single path's answer."""
    from filejobs.api.routes import by_hash

    submit(client, A, key=alice)
    submit(client, B, key=alice)
    a = {"file_sha256": SHA_A, "file_size": len(A), "file_name": "a.txt", "idempotency_key": "re/a"}
    b = {"file_sha256": SHA_B.upper(), "file_size": len(B), "file_name": "b.txt", "idempotency_key": "re/b"}
    c = {"file_sha256": SHA_A, "file_name": "c.txt", "params": {}, "idempotency_key": "re/c"}  # no size
    first = batch(client, [a, b, c], key=alice).json()["items"]
    assert [item["status"] for item in first] == [202, 202, 202]

    single = []
    real = by_hash.submit_by_hash

    async def counted(**kwargs: Any) -> Any:
        single.append(kwargs["idempotency_key"])
        return await real(**kwargs)

    monkeypatch.setattr(by_hash, "submit_by_hash", counted)
    again = batch(client, [a, b, c], key=alice).json()["items"]
    assert [(item["status"], item.get("replayed")) for item in again] == [(200, True)] * 3
    assert [item["job"]["id"] for item in again] == [item["job"]["id"] for item in first]
    assert single == ["re/c"]  # a and b from the read; c's print holds the stored size

    single.clear()
    other = batch(client, [{**a, "file_name": "renamed.txt"}, {**b, "params": {"x": 1}}], key=alice).json()
    assert [item["status"] for item in other["items"]] == [422, 422]
    assert single == ["re/a", "re/b"]

    client.delete(f"/v1/jobs/{first[0]['job']['id']}", headers=bearer(alice))
    single.clear()
    renewed = batch(client, [a, b], key=alice).json()["items"]
    assert [item["status"] for item in renewed] == [202, 200]  # a deleted job's key is free again
    assert renewed[0]["job"]["id"] != first[0]["job"]["id"]
    assert single == ["re/a"]

    theirs = batch(client, [b], key=bob).json()["items"]  # bob's "re/b" is his own key
    assert theirs[0]["status"] == 428
