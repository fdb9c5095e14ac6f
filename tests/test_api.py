"""Every endpoint of the v1 contract and every error answer it documents (uploads: tests/uploads/)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.ids import new_job_id
from filejobs.jobs import repository
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.worker import LocalWorker
from filejobs.services import Services
from filejobs.testing import post_file, submit
from tests.conftest import files_under

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert "Traceback" not in response.text
    return body


# ---- GET /v1/jobs/{id} ----------------------------------------------------------------------


def test_get_job_has_the_contract_body(client: TestClient) -> None:
    job = submit(client, content=b"abc\n", name="notes.txt")
    response = client.get(f"/v1/jobs/{job['id']}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "id", "status", "processor", "params", "file", "progress", "message", "attempts", "error",
        "result", "created_at", "started_at", "finished_at", "updated_at", "version", "notification",
        "reused_from", "links",
    }  # fmt: skip
    assert body["status"] == "queued"
    assert body["file"]["name"] == "notes.txt"
    assert body["links"] == {"self": f"/v1/jobs/{job['id']}", "result": f"/v1/jobs/{job['id']}/result"}
    assert response.headers["etag"].startswith('"')
    assert "storage_key" not in response.text
    assert "lease" not in response.text


@pytest.mark.parametrize("job_id", [new_job_id(), "not-an-id", "../../etc/passwd"])
def test_unknown_job_is_404_problem(client: TestClient, job_id: str) -> None:
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/result"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
        ("DELETE", f"/v1/jobs/{job_id}"),
    ]:
        response = client.request(method, path)
        if response.status_code == 404 and "/" in job_id.strip("/"):
            continue  # a slash in the id is a different route; still a 404
        assert_problem(response, 404)


def test_etag_and_if_none_match(client: TestClient, worker: LocalWorker) -> None:
    job = submit(client)
    first = client.get(f"/v1/jobs/{job['id']}")
    etag = first.headers["etag"]
    unchanged = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.headers["etag"] == etag
    assert unchanged.content == b""
    worker.drain()
    changed = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["status"] == "succeeded"


def test_wait_returns_as_soon_as_the_job_changes(
    client: TestClient, services: Services, worker: LocalWorker
) -> None:
    job = submit(client)
    result: dict[str, Any] = {}

    def long_poll() -> None:
        started = time.monotonic()
        result["response"] = client.get(f"/v1/jobs/{job['id']}?wait=20")
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=long_poll)
    thread.start()
    deadline = time.monotonic() + 10
    while job["id"] not in services.hub._waiters:  # the long-poll is registered and waiting
        assert time.monotonic() < deadline, "the long-poll never started waiting"
        time.sleep(0.01)
    worker.drain()
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert result["response"].status_code == 200
    assert result["response"].json()["status"] in ("running", "succeeded")
    assert result["elapsed"] < 15


def test_wait_times_out_with_the_unchanged_job(client: TestClient) -> None:
    job = submit(client)
    started = time.monotonic()
    response = client.get(f"/v1/jobs/{job['id']}?wait=0.3")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["status"] == "queued"


def test_wait_with_stale_etag_returns_at_once(client: TestClient, worker: LocalWorker) -> None:
    job = submit(client)
    stale = client.get(f"/v1/jobs/{job['id']}").headers["etag"]
    worker.drain()
    started = time.monotonic()
    response = client.get(f"/v1/jobs/{job['id']}?wait=20", headers={"If-None-Match": stale})
    assert time.monotonic() - started < 5
    assert response.json()["status"] == "succeeded"


@pytest.mark.parametrize("form", ["{}", "W/{}", "*"], ids=["strong", "weak", "any"])
def test_wait_with_current_etag_times_out_as_304(client: TestClient, form: str) -> None:
    """The weak form of the current ETag, or "*", is the current state too: the long-poll waits
    (a client sending either is not answered at once in a loop)."""
    job = submit(client)
    etag = client.get(f"/v1/jobs/{job['id']}").headers["etag"]
    started = time.monotonic()
    response = client.get(f"/v1/jobs/{job['id']}?wait=0.2", headers={"If-None-Match": form.format(etag)})
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 304


@pytest.mark.parametrize("with_key", [False, True], ids=["open", "api-key"])
def test_wait_on_a_finished_job_answers_at_once(
    client: TestClient,
    services: Services,
    worker: LocalWorker,
    monkeypatch: pytest.MonkeyPatch,
    with_key: bool,
) -> None:
    """A finished job can no longer change by itself: ``?wait=30`` answers without waiting (the
    long-poll never subscribes to the job's changes), with the body or, for its ETag, ``304``."""
    headers = {"Authorization": f"Bearer {keys.create_key(services.db, 'k')[1]}"} if with_key else {}
    job_id = client.post(
        "/v1/jobs", files={"file": ("a.txt", b"hello\n", "text/plain")}, headers=headers
    ).json()["id"]
    worker.drain()
    subscribed: list[str] = []
    monkeypatch.setattr(services.hub, "subscribe", lambda job_id: subscribed.append(job_id))
    response = client.get(f"/v1/jobs/{job_id}?wait=30", headers=headers)
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded"
    etag = response.headers["etag"]
    unchanged = client.get(f"/v1/jobs/{job_id}?wait=30", headers={**headers, "If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.headers["etag"] == etag
    assert subscribed == []


@pytest.mark.parametrize("wait", ["31", "-1", "soon"])
def test_wait_out_of_range_is_422(client: TestClient, wait: str) -> None:
    job = submit(client)
    body = assert_problem(client.get(f"/v1/jobs/{job['id']}?wait={wait}"), 422)
    assert body["errors"][0]["loc"][-1] == "wait"


HUGE = "9" * 5000  # more digits than int() takes from a string


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/jobs?limit=" + HUGE, {}, 422),
        ("/v1/jobs?cursor=" + HUGE, {}, 400),
        ("/v1/jobs?cursor=" + "W1tb" * 1000, {}, 400),  # base64 of "[[[…"
        ("/v1/jobs/{id}?wait=" + HUGE, {}, 422),
        ("/v1/jobs/{id}/events", {"Last-Event-ID": HUGE}, 400),
        ("/v1/events", {"Last-Event-ID": HUGE}, 400),
    ],
    ids=["limit", "cursor-digits", "cursor-nested", "wait", "job-last-event-id", "all-last-event-id"],
)
def test_hostile_numbers_and_cursors_are_4xx(
    client: TestClient, path: str, headers: dict[str, str], status: int
) -> None:
    """Every other value the service parses from a client: a clear 4xx, never a 500."""
    job = submit(client)
    assert_problem(client.get(path.replace("{id}", job["id"]), headers=headers), status)


# ---- GET /v1/jobs ---------------------------------------------------------------------------


def test_list_newest_first_with_filters_and_cursor(client: TestClient, worker: LocalWorker) -> None:
    ids = [submit(client, content=f"file {i}\n".encode())["id"] for i in range(5)]
    failed = submit(client, processor="fail")["id"]
    worker.drain()
    everything = client.get("/v1/jobs").json()
    assert [item["id"] for item in everything["items"]] == [failed, *reversed(ids)]
    assert everything["next_cursor"] is None

    only_failed = client.get("/v1/jobs", params={"status": "failed"}).json()["items"]
    assert [item["id"] for item in only_failed] == [failed]
    by_processor = client.get("/v1/jobs", params={"processor": "inspect"}).json()["items"]
    assert {item["id"] for item in by_processor} == set(ids)
    assert client.get("/v1/jobs", params={"processor": "nope"}).json()["items"] == []

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [failed, *reversed(ids)]


@pytest.mark.parametrize(
    ("params", "status"),
    [({"limit": 0}, 422), ({"limit": 501}, 422), ({"status": "done"}, 422), ({"cursor": "garbage!"}, 400)],
)
def test_list_rejects_bad_query(client: TestClient, params: dict[str, Any], status: int) -> None:
    assert_problem(client.get("/v1/jobs", params=params), status)


# ---- result ---------------------------------------------------------------------------------


def test_result_is_409_until_succeeded_then_json(client: TestClient, worker: LocalWorker) -> None:
    job = submit(client, content=b"one two three\n")
    body = assert_problem(client.get(f"/v1/jobs/{job['id']}/result"), 409)
    assert body["status_of_job"] == "queued"
    worker.drain()
    response = client.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["words"] == 3


def test_result_of_failed_job_is_409(client: TestClient, worker: LocalWorker) -> None:
    job = submit(client, processor="fail")
    worker.drain()
    assert assert_problem(client.get(f"/v1/jobs/{job['id']}/result"), 409)["status_of_job"] == "failed"


def test_result_file_download(client: TestClient, worker: LocalWorker) -> None:
    job = submit(client, content=b"shout this\n", name="quiet.txt", processor="upper")
    worker.drain()
    response = client.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 200
    assert response.content == b"SHOUT THIS\n"
    assert response.headers["content-disposition"].startswith("attachment")
    assert "quiet.txt.upper.txt" in response.headers["content-disposition"]


# ---- cancel, retry, delete ------------------------------------------------------------------


def test_cancel_queued_then_409_then_retry(
    client: TestClient, dispatcher: InMemoryDispatcher, worker: LocalWorker
) -> None:
    job = submit(client)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert job["id"] in dispatcher.cancelled_ids
    assert worker.drain() == 0  # a cancelled job is never claimed
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel"), 409)

    retried = client.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 202
    assert retried.headers["location"] == f"/v1/jobs/{job['id']}"
    assert retried.json()["status"] == "queued"
    assert retried.json()["attempts"] == 0
    assert dispatcher.submitted.count(job["id"]) == 2
    assert_problem(client.post(f"/v1/jobs/{job['id']}/retry"), 409)  # queued: nothing to retry
    worker.drain()
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel"), 409)  # succeeded is terminal
    assert_problem(client.post(f"/v1/jobs/{job['id']}/retry"), 409)


def test_retry_failed_job_clears_error(client: TestClient, worker: LocalWorker) -> None:
    job = submit(client, processor="fail", params={"code": "nope"})
    worker.drain()
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "nope"
    retried = client.post(f"/v1/jobs/{job['id']}/retry").json()
    assert retried["error"] is None
    assert retried["finished_at"] is None


def test_delete_removes_row_and_files(client: TestClient, worker: LocalWorker, data_dir: Path) -> None:
    job = submit(client, processor="upper")
    worker.drain()
    assert files_under(data_dir)  # the upload and the output
    response = client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(client.get(f"/v1/jobs/{job['id']}"), 404)
    assert files_under(data_dir) == []
    assert_problem(client.delete(f"/v1/jobs/{job['id']}"), 404)


# ---- processors, health, docs ---------------------------------------------------------------


def test_processors_lists_names_types_and_schemas(client: TestClient) -> None:
    items = {item["name"]: item for item in client.get("/v1/processors").json()["items"]}
    assert "inspect" in items
    assert items["inspect"]["accepts"] == ["*/*"]
    assert items["text-only"]["accepts"] == ["text/plain"]
    schema = items["sleep"]["params_schema"]
    assert schema["type"] == "object"
    assert {"seconds", "steps"} <= set(schema["properties"])
    assert items["inspect"]["description"]


def test_health_and_readiness(client: TestClient, dispatcher: InMemoryDispatcher) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "dispatcher": "ok"}
    dispatcher.ready = False
    body = assert_problem(client.get("/readyz"), 503)
    assert body["checks"]["dispatcher"].startswith("failed")
    assert body["checks"]["database"] == "ok"


def test_readiness_fails_when_storage_is_unwritable(client: TestClient, services: Services) -> None:
    def broken() -> None:
        raise PermissionError("read-only file system")

    services.storage.check = broken  # type: ignore[method-assign]
    body = assert_problem(client.get("/readyz"), 503)
    assert body["checks"]["storage"] == "failed: PermissionError"
    assert "read-only" not in str(body)  # no server details leak


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/v1/nothing"), 404)
    assert_problem(client.put("/v1/jobs"), 405)


def test_openapi_documents_every_endpoint_and_error(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("/v1/jobs", "post"), ("/v1/jobs", "get"), ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"), ("/v1/jobs/{job_id}/result", "get"),
        ("/v1/jobs/{job_id}/cancel", "post"), ("/v1/jobs/{job_id}/retry", "post"),
        ("/v1/processors", "get"), ("/healthz", "get"), ("/readyz", "get"),
    }  # fmt: skip
    assert expected <= {(path, method) for path, ops in paths.items() for method in ops}
    upload_op = paths["/v1/jobs"]["post"]
    multipart = upload_op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["required"] == ["file"]
    assert multipart["properties"]["file"]["format"] == "binary"
    assert {"202", "400", "413", "415", "422", "507"} <= set(upload_op["responses"])
    problem_ref = upload_op["responses"]["413"]["content"][PROBLEM]["schema"]["$ref"]
    assert problem_ref == "#/components/schemas/ProblemDetails"
    assert "ProblemDetails" in schema["components"]["schemas"]
    assert {"404", "409"} <= set(paths["/v1/jobs/{job_id}/cancel"]["post"]["responses"])
    assert "304" in paths["/v1/jobs/{job_id}"]["get"]["responses"]


def test_openapi_documents_every_client_error_as_a_problem(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    errors = [
        (path, method, status, list(answer.get("content", {})))
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        for status, answer in op["responses"].items()
        if status.startswith(("4", "5"))
    ]
    assert errors
    assert [e for e in errors if e[3] != [PROBLEM]] == []


def test_secret_params_are_never_shown_but_reach_the_processor(
    client: TestClient, services: Services, worker: LocalWorker
) -> None:
    response = post_file(client, processor="secretive", params={"token": "s3cret", "label": "x"})
    assert response.status_code == 202
    assert "s3cret" not in response.text
    job_id = response.json()["id"]
    assert response.json()["params"] == {"token": "**********", "label": "x"}
    assert "s3cret" not in client.get(f"/v1/jobs/{job_id}").text
    assert "s3cret" not in client.get("/v1/jobs").text
    worker.drain()
    done = client.get(f"/v1/jobs/{job_id}").json()
    assert done["status"] == "succeeded"
    assert done["result"] == {"token_ok": True, "label": "x"}
    assert "s3cret" not in str(done)
    # The secret lives in its own column (kept for retries), not in the public params.
    row = repository.get_job(services.db, job_id)
    assert row is not None
    assert row.secret_params == {"token": "s3cret"}
    assert row.params == {"token": "**********", "label": "x"}
