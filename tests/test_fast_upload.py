"""The upload's fast path (filejobs.api.fast_upload) answers its 202 with the route's bytes, and
:func:`filejobs.api.responses.job_json` renders a job exactly as the ``JobPublic`` model does.

A plain ``POST /v1/jobs`` is answered by the fast path; the same upload with a query string goes
through FastAPI's route. The 202 bodies name different jobs, so each is compared with the route's
``GET`` of its own job (the same row, the same version) and the headers are compared by name,
in order, and by value where the job does not enter.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.api import fast_upload
from filejobs.api.responses import job_json
from filejobs.api.security_headers import API_CSP
from filejobs.app import create_app
from filejobs.errors import problem_type
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.models import Job, JobStatus, job_public
from filejobs.services import Services
from filejobs.testing import make_job, post_file
from tests.conftest import make_settings
from tests.security.helpers import assert_nothing_stored

WHEN = datetime(2026, 12, 6, 14, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"params": {"text": 'caf\u00e9 \u2028 \u0001 "q" \\', "n": 1.5, "big": 10**20, "tiny": 1e-300}},
        {"params": {"nested": {"list": [1, 2.0, None, True, "x"], "empty": {}}, "f": 1e20, "neg": -0.0}},
        {"file_name": 'we"ird \u00e9\u00e8 <name>.txt', "file_size": 0, "file_content_type": "text/csv"},
        {"progress": 0, "attempts": 2, "message": "half way", "version": 7},
        {"progress": 0.333333333333, "message": None},
        {
            "status": JobStatus.failed.value,
            "error_code": "processor_error",
            "error_message": None,
            "finished_at": WHEN + timedelta(seconds=3),
            "started_at": WHEN,
        },
        {"status": JobStatus.failed.value, "error_code": "timeout", "error_message": "took \u00e9 too long"},
        {
            "status": JobStatus.succeeded.value,
            "result": {"lines": 3, "words": ["a", "b"], "ratio": 0.1},
            "notification": "pending",
            "reused_from": "0190f0f0-0000-7000-8000-000000000000",
        },
        {"created_at": WHEN, "updated_at": WHEN.replace(microsecond=0)},
        {"created_at": WHEN.replace(tzinfo=None), "updated_at": WHEN.replace(tzinfo=None)},
    ],
)
def test_job_json_is_the_models_rendering(overrides: dict[str, Any]) -> None:
    job = make_job(**overrides)
    assert job_json(job) == job_public(job).model_dump_json().encode()


def test_job_json_refuses_a_status_the_model_refuses() -> None:
    job = make_job(status="nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        job_json(job)


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs the fast path answered."""
    ids: list[str] = []
    real = fast_upload.queued_answer

    def counting(job: Job) -> Any:
        ids.append(job.id)
        return real(job)

    monkeypatch.setattr(fast_upload, "queued_answer", counting)
    return ids


def _headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    return list(response.headers.raw)


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"processor": "inspect"},
        {"params": {}},
    ],
)
def test_the_fast_202_is_the_routes_202(
    client: TestClient, answered: list[str], form: dict[str, Any]
) -> None:
    route = client.post(
        "/v1/jobs?via=route",
        files={"file": ("n\u00e9.txt", "h\u00e9llo\n".encode(), "text/plain")},
        data={k: (v if isinstance(v, str) else "{}") for k, v in form.items()},
    )  # first: the route finds the service open, so the next plain upload takes the fast path
    fast = post_file(client, "h\u00e9llo\n".encode(), name="n\u00e9.txt", **form)
    assert fast.status_code == route.status_code == 202, (fast.text, route.text)
    fast_id, route_id = fast.json()["id"], route.json()["id"]
    assert answered[0] == fast_id
    assert route_id not in answered  # the route answered it

    names = [name for name, _ in _headers(fast)]
    assert names == [name for name, _ in _headers(route)]
    assert names == [
        b"etag", b"location", b"retry-after", b"content-length", b"content-type",
        b"x-content-type-options", b"x-frame-options", b"content-security-policy",
    ]  # fmt: skip
    fixed = {b"retry-after", b"content-type", b"x-content-type-options", b"x-frame-options"}
    fixed.add(b"content-security-policy")
    assert [h for h in _headers(fast) if h[0] in fixed] == [h for h in _headers(route) if h[0] in fixed]
    for answer, job_id in ((fast, fast_id), (route, route_id)):
        assert answer.headers["location"] == f"/v1/jobs/{job_id}"
        polled = client.get(f"/v1/jobs/{job_id}?wait=0")
        assert answer.content == polled.content  # the same row, rendered the same way
        assert answer.headers["etag"] == polled.headers["etag"]
        assert answer.headers["content-length"] == str(len(answer.content))


def test_an_expired_auth_gate_is_read_again_by_the_fast_path(
    client: TestClient, services: Services, answered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether keys are required is known for a second at a time; a plain upload that finds it
    unknown reads it (once for all the uploads arriving meanwhile) instead of going to the route."""
    reads: list[bool] = []
    real = services.auth.required

    def counting() -> bool:
        reads.append(real())
        return reads[-1]

    monkeypatch.setattr(services.auth, "required", counting)
    monkeypatch.setattr(services.auth, "ttl", 0.0)  # never known: every upload reads it
    first = post_file(client)
    second = post_file(client)
    assert first.status_code == second.status_code == 202
    assert answered == [first.json()["id"], second.json()["id"]]
    assert reads
    assert not any(reads)

    keys.create_key(services.db, "alice")  # keys are required from now on: the route refuses
    refused = post_file(client)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert reads[-1] is True
    assert len(answered) == 2
    assert client.get(f"/v1/jobs/{first.json()['id']}").status_code == 401


def test_the_plain_upload_runs_none_of_fastapi(
    client: TestClient, answered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app hands the plain upload to the fast path before FastAPI's own ``__call__`` (its
    telemetry check, the error and CORS middleware); anything else still goes through it."""
    calls: list[str] = []
    real = FastAPI.__call__

    async def counting(self: FastAPI, scope: Any, receive: Any, send: Any) -> None:
        calls.append(f"{scope.get('method')} {scope['path']}")
        await real(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counting)
    plain = post_file(client)
    assert plain.status_code == 202
    assert answered == [plain.json()["id"]]
    assert calls == []
    routed = client.post("/v1/jobs?via=route", files={"file": ("a.txt", b"a\n", "text/plain")})
    assert routed.status_code == 202
    assert calls == ["POST /v1/jobs"]


@pytest.fixture
def cors_client(data_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(data_dir, cors_origins="https://app.example")
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as test_client:
        yield test_client


def test_a_cross_origin_upload_gets_the_cors_headers(cors_client: TestClient, answered: list[str]) -> None:
    """With CORS on, a browser's upload from another origin is left to the route, inside the CORS
    middleware: its 202 names the allowed origin. One with no Origin takes the fast path."""
    browser = post_file(cors_client, headers={"Origin": "https://app.example"})
    assert browser.status_code == 202
    assert browser.headers["access-control-allow-origin"] == "https://app.example"
    assert answered == []
    other = post_file(cors_client, headers={"Origin": "https://evil.example"})
    assert other.status_code == 202
    assert "access-control-allow-origin" not in other.headers
    plain = post_file(cors_client)
    assert plain.status_code == 202
    assert answered == [plain.json()["id"]]
    assert "access-control-allow-origin" not in plain.headers


def test_an_unexpected_error_is_a_problem_500_and_leaves_no_job(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the fast path's intake (here: the upload's parsing raising a plain error) answers
    what the app's handler answers any unexpected error: a problem+json 500 with the security
    headers and no stack trace, logged; and no job or stored file is left behind."""

    async def broken(**_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(fast_upload, "submit_upload", broken)
    with caplog.at_level(logging.ERROR, logger="filejobs.api.problems"):
        answer = post_file(client)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {
        "type": problem_type(500),
        "title": "Internal Server Error",
        "status": 500,
        "detail": "The server failed to handle this request.",
        "instance": "/v1/jobs",
    }
    assert "a bug" not in answer.text
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"] == API_CSP
    assert any("unhandled error on POST /v1/jobs" in r.getMessage() for r in caplog.records)
    assert client.get("/v1/jobs").json()["items"] == []
    assert_nothing_stored(services, uploads=0, jobs=0)
