"""The OpenAPI document against what the service does, where schemathesis' CLI found them apart:
event streams described so that each event validates, an empty ``cursor``, the processors as an
enum, ``HEAD`` wherever ``GET`` is served, and one problem ``type`` per status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient

from filejobs.errors import PROBLEM_JSON
from filejobs.events import wire
from filejobs.jobs.worker import LocalWorker
from filejobs.services import Services
from filejobs.testing import post_file, submit


@pytest.fixture
def openapi(client: TestClient) -> Any:
    return schemathesis.openapi.from_dict(client.get("/openapi.json").json())


def event_stream(request: httpx.Request, body: bytes) -> httpx.Response:
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=body, request=request
    )
    response.elapsed = timedelta(0)
    return response


def test_every_kind_of_event_validates_against_the_documented_schema(
    client: TestClient, services: Services, worker: LocalWorker, openapi: Any
) -> None:
    """schemathesis' response_schema_conformance reads each event as {event, data, id, retry} and
    validates it against the operation's text/event-stream schema: it must describe an event, and
    its data (a job body, a deletion, a reset)."""
    job_id = submit(client)["id"]
    worker.drain()
    path = f"/v1/jobs/{job_id}/events"
    response = client.get(path)  # a finished job: its state, then the end
    assert b"event: job" in response.content
    operation = openapi["/v1/jobs/{job_id}/events"]["GET"]
    assert operation.validate_response(response) is None

    job = services.reader.get(job_id, owner="")
    assert job is not None
    every_kind = (
        wire.retry()
        + wire.job_event(job, "1796547104454631")
        + wire.HEARTBEAT
        + wire.deleted_event(job_id)
        + wire.reset_event("1796547104454632")
    )
    for label in ("/v1/jobs/{job_id}/events", "/v1/events"):
        checked = event_stream(response.request, every_kind)
        assert openapi[label]["GET"].validate_response(checked) is None

    event = wire.job_event(job, "1")
    assert b'"status":"succeeded"' in event
    not_a_job = event.replace(b'"status":"succeeded"', b'"status":"finished"')
    with pytest.raises(Exception, match="SSE event violates schema"):  # the schema does say something
        operation.validate_response(event_stream(response.request, not_a_job))


def test_an_empty_cursor_is_the_first_page(client: TestClient) -> None:
    job_id = submit(client)["id"]
    first = client.get("/v1/jobs", params={"cursor": ""})
    assert first.status_code == 200, first.text
    assert [item["id"] for item in first.json()["items"]] == [job_id]
    assert first.json() == client.get("/v1/jobs").json()


def test_the_upload_lists_the_registered_processors(client: TestClient, services: Services) -> None:
    upload_schema = client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["requestBody"]
    fields = upload_schema["content"]["multipart/form-data"]["schema"]["properties"]
    assert fields["processor"]["enum"] == [*services.registry.names(), ""]
    assert "422" in fields["params"]["description"]
    refused = post_file(client, processor="no-such-processor")
    assert refused.status_code == 422
    default = post_file(client, processor="")  # empty: the default, as the enum's "" says
    assert (default.status_code, default.json()["processor"]) == (202, fields["processor"]["default"])


def get_and_head(client: TestClient, path: str, **headers: str) -> tuple[httpx.Response, httpx.Response]:
    return client.get(path, headers=headers), client.head(path, headers=headers)


def test_head_answers_with_the_gets_headers_and_no_body(
    client: TestClient, services: Services, worker: LocalWorker
) -> None:
    job_id = submit(client, b"a,b\n1,2\n", name="t.csv", content_type="text/csv")["id"]
    worker.drain()
    for path in (
        f"/v1/jobs/{job_id}",  # the fast path
        f"/v1/jobs/{job_id}?wait=0",  # the route
        f"/v1/jobs/{job_id}/result",
        "/v1/jobs",
        "/v1/processors",
        "/healthz",
        "/openapi.json",
        "/",
    ):
        got, head = get_and_head(client, path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"", path
        for name in ("content-type", "content-length", "etag", "content-disposition"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)
    missing = client.head("/v1/jobs/01a24200-0000-7000-8000-000000000000")
    assert (missing.status_code, missing.content) == (404, b"")
    assert missing.headers["content-type"] == PROBLEM_JSON

    for path in (f"/v1/jobs/{job_id}/events", "/v1/events"):  # headers, and no stream held open
        head = client.head(path)
        assert head.status_code == 200, path
        assert head.headers["content-type"].startswith("text/event-stream")
        assert head.content == b""
        assert services.feed.streams == 0


def test_a_405_allows_head_where_get_is_allowed(client: TestClient) -> None:
    refused = client.put("/v1/jobs")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD, POST"
    only_post = client.head("/v1/jobs/01a24200-0000-7000-8000-000000000000/cancel")
    assert only_post.status_code == 405
    assert only_post.headers["allow"] == "POST"


def test_one_problem_type_per_status(client: TestClient) -> None:
    """422s come from FastAPI's validation and from the service's own checks; 400s from the
    multipart receiver and from header checks: each status has one type whatever raised it."""
    answers = {
        "validation": client.get("/v1/jobs", params={"limit": 0}),
        "processor": post_file(client, processor="no-such-processor"),
        "params": post_file(client, params={"nope": 1}),
        "multipart": client.post(
            "/v1/jobs", content=b"--x\r\n", headers={"content-type": "multipart/form-data; boundary=x"}
        ),
        "last-event-id": client.get("/v1/events", headers={"Last-Event-ID": "yesterday"}),
        "idempotency-key": client.post(
            "/v1/jobs", files={"file": ("a.txt", b"a\n")}, headers={"Idempotency-Key": "\x7f"}
        ),
        "not found": client.get("/v1/jobs/01a24200-0000-7000-8000-000000000000"),
        "route not found": client.get("/v1/nothing"),
    }
    types: dict[int, set[str]] = {}
    for name, response in answers.items():
        assert response.headers["content-type"] == PROBLEM_JSON, name
        body = response.json()
        types.setdefault(body["status"], set()).add(body["type"])
    assert types == {
        400: {"https://filejobs.dev/problems/bad-request"},
        404: {"https://filejobs.dev/problems/not-found"},
        422: {"https://filejobs.dev/problems/unprocessable-content"},
    }
