"""Resumable uploads under the limits of POST /v1/jobs, per-key bounds, expiry, and CORS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.sweeper import sweep
from filejobs.services import Services
from filejobs.testing import submit
from tests.conftest import files_under, make_settings
from tests.tus.helpers import TUS, create, created, head, is_problem, offset_of, patch

DATA = b"0123456789" * 100


def app_client(data_dir: Path, **overrides: Any) -> Iterator[tuple[TestClient, Services]]:
    app = create_app(make_settings(data_dir, **overrides), dispatcher=InMemoryDispatcher())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, client.app_state["services"]


@pytest.fixture
def limited(data_dir: Path, request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, Services]]:
    yield from app_client(data_dir, **request.param)


def tus_files(services: Services) -> list[Path]:
    return [p for p in files_under(services.settings.data_dir) if "tus" in p.parts]


@pytest.mark.parametrize("limited", [{"max_upload_bytes": 1000}], indirect=True)
def test_tus_max_size_is_max_upload_bytes(limited: tuple[TestClient, Services]) -> None:
    client, _ = limited
    assert client.options("/v1/uploads").headers["tus-max-size"] == "1000"
    assert is_problem(create(client, 1001), 413)
    url = created(client, None)
    assert is_problem(patch(client, url, 0, b"x" * 10, {"Upload-Length": "1001"}), 413)
    assert is_problem(patch(client, url, 0, b"x" * 1001), 413)  # deferred: the limit bounds the bytes
    assert offset_of(client, url) == 0


@pytest.mark.parametrize("limited", [{"min_free_disk": 1 << 60}], indirect=True)
def test_creation_is_507_when_the_disk_is_short(limited: tuple[TestClient, Services]) -> None:
    client, services = limited
    response = create(client, 10)
    assert is_problem(response, 507)
    assert "retry-after" in response.headers
    assert not tus_files(services)


@pytest.mark.parametrize("limited", [{"max_queue_depth": 1}], indirect=True)
def test_creation_is_503_when_the_queue_is_deep(limited: tuple[TestClient, Services]) -> None:
    client, services = limited
    submit(client)["id"]
    assert is_problem(create(client, 10), 503)
    assert not tus_files(services)


@pytest.mark.parametrize("limited", [{"max_unfinished_jobs": 1}], indirect=True)
def test_creation_is_429_when_the_key_has_too_many_unfinished_jobs(
    limited: tuple[TestClient, Services],
) -> None:
    client, services = limited
    submit(client)["id"]
    assert is_problem(create(client, 10), 429)
    assert not tus_files(services)


@pytest.mark.parametrize("limited", [{"rate_limit": 0.001, "rate_burst": 2}], indirect=True)
def test_tus_requests_are_rate_limited_per_key(limited: tuple[TestClient, Services]) -> None:
    client, services = limited
    auth = {"Authorization": f"Bearer {keys.create_key(services.db, 'k')[1]}"}
    url = created(client, len(DATA), headers=auth)
    assert head(client, url, auth).status_code == 200
    limited_answer = head(client, url, auth)
    assert limited_answer.status_code == 429
    assert limited_answer.headers["tus-resumable"] == "1.0.0"


@pytest.mark.parametrize(
    "limited", [{"max_resumable_uploads": 2, "max_resumable_bytes": 3000}], indirect=True
)
def test_one_key_cannot_hold_more_than_its_uploads_and_bytes(limited: tuple[TestClient, Services]) -> None:
    """Neither slots nor disk: a key's incomplete uploads are bounded in number and bytes, and
    other keys still get theirs."""
    client, services = limited
    alice = {"Authorization": f"Bearer {keys.create_key(services.db, 'alice')[1]}"}
    bob = {"Authorization": f"Bearer {keys.create_key(services.db, 'bob')[1]}"}
    first = created(client, 1000, headers=alice)
    created(client, 1000, headers=alice)
    third = create(client, 10, headers=alice)
    assert is_problem(third, 429)
    assert "incomplete resumable uploads" in third.json()["detail"]
    assert created(client, 2500, headers=bob)  # bob has bounds of his own
    assert created(client, 10, headers=bob)
    assert client.delete(first, headers={**TUS, **alice}).status_code == 204
    too_big = create(client, 2001, headers=alice)  # 1000 held + 2001 > 3000
    assert is_problem(too_big, 429)
    deferred = created(client, None, headers=alice)  # 1000 held: 2000 bytes of room
    assert is_problem(patch(client, deferred, 0, b"x" * 2001, alice), 413)
    assert patch(client, deferred, 0, b"x" * 2000, alice).status_code == 204
    assert is_problem(create(client, 10, headers=alice), 429)


@pytest.mark.parametrize("limited", [{"max_resumable_uploads": 1}], indirect=True)
def test_a_finished_upload_frees_its_slot(limited: tuple[TestClient, Services]) -> None:
    client, _ = limited
    url = created(client, len(DATA))
    assert is_problem(create(client, 10), 429)
    assert patch(client, url, 0, DATA).status_code == 204
    assert created(client, 10)


@pytest.mark.parametrize("limited", [{"upload_expiry": timedelta(0)}], indirect=True)
def test_an_expired_upload_is_410_then_swept(limited: tuple[TestClient, Services]) -> None:
    client, services = limited
    url = created(client, len(DATA))
    assert is_problem(patch(client, url, 0, DATA[:10]), 410)
    assert head(client, url).status_code == 410
    report = sweep(
        db=services.db,
        storage=services.storage,
        settings=services.settings,
        dispatcher=services.dispatcher,
        uploads=services.uploads,
    )
    assert report.uploads_expired == 1
    assert head(client, url).status_code == 404
    assert not tus_files(services)


def test_the_sweeper_keeps_live_uploads_and_removes_them_after_upload_expiry(
    client: TestClient, services: Services
) -> None:
    url = created(client, len(DATA))
    assert patch(client, url, 0, DATA[:10]).status_code == 204
    done = created(client, len(DATA))
    assert patch(client, done, 0, DATA).status_code == 204
    assert services.uploads.remove_expired(time.time()) == 0
    assert offset_of(client, url) == 10
    assert "filejobs-job" in head(client, done).headers
    expiry = services.settings.upload_expiry.total_seconds()
    assert services.settings.upload_expiry == timedelta(hours=24)
    assert services.uploads.remove_expired(time.time() + expiry + 5) == 2
    assert head(client, url).status_code == 404
    assert not tus_files(services)


def test_a_held_upload_is_not_swept(client: TestClient, services: Services) -> None:
    url = created(client, len(DATA))
    upload = services.uploads.open("", url.rsplit("/", 1)[1], wait=0)
    assert upload is not None
    try:
        assert services.uploads.remove_expired(time.time() + 10 * 86400) == 0
    finally:
        upload.close()
    assert services.uploads.remove_expired(time.time() + 10 * 86400) == 1


def test_a_patch_while_another_holds_the_upload_is_423_a_head_is_not(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    from filejobs.tus import handlers

    monkeypatch.setattr(handlers, "LOCK_WAIT", 0.05)
    url = created(client, len(DATA))
    upload = services.uploads.open("", url.rsplit("/", 1)[1], wait=0)
    assert upload is not None
    try:
        assert is_problem(patch(client, url, 0, DATA[:10]), 423)
        assert offset_of(client, url) == 0  # a HEAD answers the recorded offset instead
    finally:
        upload.close()
    assert patch(client, url, 0, DATA[:10]).status_code == 204


@pytest.mark.parametrize("limited", [{"cors_origins": "https://app.example"}], indirect=True)
def test_cors_lets_a_browser_tus_client_read_the_tus_headers(limited: tuple[TestClient, Services]) -> None:
    client, _ = limited
    origin = {"Origin": "https://app.example"}
    preflight = client.options(
        "/v1/uploads/" + "0" * 32,
        headers={
            **origin,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "tus-resumable,upload-offset,upload-checksum,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    url = created(client, len(DATA), headers=origin)
    answer = head(client, url, origin)
    exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
    assert {"upload-offset", "location", "tus-resumable", "upload-length", "filejobs-job"} <= exposed
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    other = head(client, url, {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_without_origins(client: TestClient) -> None:
    url = created(client, len(DATA), headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in head(client, url, {"Origin": "https://app.example"}).headers
