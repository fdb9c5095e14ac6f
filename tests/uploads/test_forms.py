"""POST /v1/jobs: the form (the file, processor and params fields in any order, defaults, 422s),
and refusals as soon as a bad field has arrived, before the file streams."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.errors import Unprocessable
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.services import Services
from filejobs.testing import post_file
from filejobs.uploads import WRITE_CHUNK
from tests.uploads.helpers import (
    BOUNDARY,
    MULTIPART,
    SLEEP_DEFAULTS,
    agen,
    assert_nothing_left,
    assert_only_upload,
    assert_problem,
    chunked,
    file_head,
    file_part,
    multipart,
    part,
    run_create_job,
    spy_on_uploads,
    stored_content,
)

# ==== 202 =======================================================================================


def test_accepted_upload_answers_202_with_location_retry_after_and_etag(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    content = b"one two\nthree\n"
    response = post_file(client, content, name="notes.txt")

    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    job = response.json()
    job_id = job["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    assert response.headers["retry-after"].isdigit()
    etag = response.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert len(etag) > 2

    assert job["status"] == "queued"
    assert job["processor"] == "inspect"
    assert job["params"] == {}
    assert job["file"] == {
        "name": "notes.txt",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "content_type": "text/plain",
    }
    assert job["progress"] == 0.0
    assert job["message"] is None
    assert job["attempts"] == 0
    assert job["error"] is None
    assert job["result"] is None
    assert datetime.fromisoformat(job["created_at"]).tzinfo is not None
    assert job["started_at"] is None
    assert job["finished_at"] is None
    assert job["links"] == {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"}
    assert not {"storage_key", "declared_content_type", "lease_owner"} & job.keys()

    # The row committed before the answer; the job is dispatched after it, exactly once.
    again = client.get(response.headers["location"])
    assert again.status_code == 200
    assert again.json() == job
    assert again.headers["etag"] == etag
    assert dispatcher.submitted == [job_id]
    assert [item["id"] for item in client.get("/v1/jobs").json()["items"]] == [job_id]

    # The file is committed under data/uploads/<id>, byte for byte; no temp file remains.
    assert_only_upload(data_dir, job_id)
    assert stored_content(data_dir, job_id) == content


@pytest.mark.parametrize("order", ["fields-first", "fields-last", "file-between"])
def test_processor_and_params_before_or_after_the_file(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, order: str
) -> None:
    processor = part("processor", "sleep")
    params = part("params", json.dumps({"seconds": 0.5, "steps": 3}))
    the_file = file_part()
    parts = {
        "fields-first": (processor, params, the_file),
        "fields-last": (the_file, processor, params),
        "file-between": (params, the_file, processor),
    }[order]
    response = client.post("/v1/jobs", content=multipart(*parts), headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["processor"] == "sleep"
    assert job["params"] == {"seconds": 0.5, "steps": 3, "ignore_cancel": False}
    assert client.get(f"/v1/jobs/{job['id']}").json()["params"] == job["params"]
    assert dispatcher.submitted == [job["id"]]
    assert_only_upload(data_dir, job["id"])


@pytest.mark.parametrize(
    "params", [None, "", "{}", "  {}  "], ids=["absent", "empty", "empty-object", "spaces"]
)
def test_params_defaults_are_filled_in_and_stored(client: TestClient, params: str | None) -> None:
    parts = [part("processor", "sleep")]
    if params is not None:
        parts.append(part("params", params))
    response = client.post("/v1/jobs", content=multipart(*parts, file_part()), headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["params"] == SLEEP_DEFAULTS
    assert client.get(f"/v1/jobs/{job['id']}").json()["params"] == SLEEP_DEFAULTS


def test_partial_params_are_completed_with_defaults(client: TestClient) -> None:
    response = post_file(client, processor="sleep", params={"steps": 4})
    assert response.status_code == 202, response.text
    assert response.json()["params"] == {**SLEEP_DEFAULTS, "steps": 4}


@pytest.mark.parametrize("processor", [None, ""], ids=["absent", "empty"])
def test_processor_defaults_to_inspect(client: TestClient, processor: str | None) -> None:
    parts = [] if processor is None else [part("processor", processor)]
    response = client.post("/v1/jobs", content=multipart(*parts, file_part()), headers=MULTIPART)
    assert response.status_code == 202, response.text
    assert response.json()["processor"] == "inspect"
    assert response.json()["params"] == {}


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/form-data; boundary="{BOUNDARY}"',
        f"Multipart/Form-Data; boundary={BOUNDARY}",
        f"multipart/form-data; charset=utf-8; boundary={BOUNDARY}",
    ],
    ids=["quoted-boundary", "mixed-case", "extra-parameter"],
)
def test_content_type_variants_are_accepted(client: TestClient, content_type: str) -> None:
    response = client.post("/v1/jobs", content=multipart(file_part()), headers={"content-type": content_type})
    assert response.status_code == 202, response.text


def test_an_epilogue_after_the_closing_boundary_is_ignored(client: TestClient, data_dir: Path) -> None:
    response = client.post(
        "/v1/jobs", content=multipart(file_part(b"data\n")) + b"trailing epilogue\r\n", headers=MULTIPART
    )
    assert response.status_code == 202, response.text
    assert stored_content(data_dir, response.json()["id"]) == b"data\n"


# ==== 422: the form =============================================================================


UNPROCESSABLE: list[tuple[str, list[bytes], str]] = [
    ("missing-file-field", [part("processor", "inspect")], "no 'file' field"),
    ("no-parts-at-all", [], "no 'file' field"),
    (
        "file-under-another-name",
        [part("upload", b"data", filename="a.txt")],
        "Unknown form field(s): upload. Send the file in the 'file' field",
    ),
    (
        "binary-file-under-another-name",
        [part("upload", b"\xff\xd8\xff\xe0 a JPEG", filename="photo.jpg"), file_part()],
        "Unknown form field(s): upload. Send the file in the 'file' field",
    ),
    (
        "binary-field-under-another-name",
        [part("upload", b"\xff\xd8\xff\xe0 a JPEG"), file_part()],
        "Unknown form field(s): upload. Send the file in the 'file' field",
    ),
    # curl -F file=photo.jpg (no '@'): the text "photo.jpg", not a file.
    ("file-field-without-filename", [part("file", "photo.jpg")], "not a file: its part has no filename"),
    ("file-field-without-filename-says-how", [part("file", "photo.jpg")], "-F file=@path"),
    ("empty-file", [file_part(b"")], "empty"),
    ("two-file-fields", [file_part(b"one"), file_part(b"two")], "exactly one file"),
    ("unknown-field-before-file", [part("colour", "red"), file_part()], "Unknown form field(s): colour"),
    ("unknown-field-after-file", [file_part(), part("colour", "red")], "Unknown form field(s): colour"),
    ("duplicate-field", [part("processor", "inspect"), part("processor", "inspect"), file_part()], "twice"),
    ("non-utf8-field", [part("processor", b"\xff\xfe\xfd"), file_part()], "not UTF-8"),
    ("params-not-json", [part("params", "{seconds: 1"), file_part()], "not valid JSON"),
    ("params-list", [part("processor", "sleep"), part("params", "[1, 2]"), file_part()], "JSON object"),
    ("params-string", [part("processor", "sleep"), part("params", '"x"'), file_part()], "JSON object"),
    ("params-number", [part("processor", "sleep"), part("params", "5"), file_part()], "JSON object"),
    ("params-null", [part("processor", "sleep"), part("params", "null"), file_part()], "JSON object"),
    ("params-for-no-params-processor", [part("params", '{"x": 1}'), file_part()], "Invalid params"),
    # valid JSON that json.loads itself fails on (RecursionError, ValueError), or that nests deeper
    # than is stored: 422, never 500
    (
        "params-nested-1000-deep",
        [part("processor", "sleep"), part("params", '{"a":' * 1000 + "1" + "}" * 1000), file_part()],
        "'params' is nested too deeply",
    ),
    (
        "params-nested-33-deep",
        [part("processor", "sleep"), part("params", '{"a":' * 33 + "1" + "}" * 33), file_part()],
        "at most 32 levels",
    ),
    (
        "params-integer-of-5000-digits",
        [file_part(), part("processor", "sleep"), part("params", '{"steps": ' + "7" * 5000 + "}")],
        "'params' holds an integer of more than 4300 digits",
    ),
]


@pytest.mark.parametrize(
    ("parts", "detail"), [u[1:] for u in UNPROCESSABLE], ids=[u[0] for u in UNPROCESSABLE]
)
def test_bad_forms_are_422(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, parts: list[bytes], detail: str
) -> None:
    response = client.post("/v1/jobs", content=multipart(*parts), headers=MULTIPART)
    assert_problem(response, 422, data_dir, detail=detail)
    assert_nothing_left(client, data_dir, dispatcher)


@pytest.mark.parametrize("where", ["before-file", "after-file"])
def test_unknown_processor_is_422_and_lists_the_available_ones(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, where: str
) -> None:
    processor = part("processor", "nope")
    parts = (processor, file_part()) if where == "before-file" else (file_part(), processor)
    response = client.post("/v1/jobs", content=multipart(*parts), headers=MULTIPART)
    problem = assert_problem(response, 422, data_dir, detail="Unknown processor 'nope'")
    available = sorted(p["name"] for p in client.get("/v1/processors").json()["items"])
    assert problem["processors"] == available
    assert {"inspect", "sleep", "text-only"} <= set(available)
    for name in available:
        assert name in problem["detail"]
    assert_nothing_left(client, data_dir, dispatcher)


def test_params_failing_the_processor_schema_are_422_with_errors(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    response = post_file(client, processor="sleep", params={"seconds": -1})
    problem = assert_problem(response, 422, data_dir, detail="Invalid params for processor 'sleep'")
    [error] = problem["errors"]
    assert error["loc"] == ["seconds"]
    assert error["type"] == "greater_than_equal"
    assert error["msg"]
    assert "input" not in error
    assert "url" not in error
    assert_nothing_left(client, data_dir, dispatcher)


def test_params_with_an_unknown_key_are_422(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    response = post_file(client, processor="sleep", params={"seconds": 0, "bogus": True})
    problem = assert_problem(response, 422, data_dir)
    assert [e["loc"] for e in problem["errors"]] == [["bogus"]]
    assert_nothing_left(client, data_dir, dispatcher)


# ==== fail fast =================================================================================


def test_bad_processor_before_the_file_is_refused_before_the_file_streams(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    # The file part is followed by garbage and never closed: were the body read to its end, the
    # answer would be 400 (malformed). It is 422: the refusal came when the file part began.
    body = multipart(part("processor", "nope"), close=False)
    body += file_head("a.txt")
    body += b"file bytes \x00\x01 then no boundary at all"
    response = client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert_problem(response, 422, data_dir, detail="Unknown processor 'nope'")
    assert_nothing_left(client, data_dir, dispatcher)


def _consumption_recording_body(chunks: list[bytes], consumed: list[int]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        for index, chunk in enumerate(chunks):
            consumed.append(index)
            yield chunk

    return body()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ([part("processor", "nope")], "Unknown processor 'nope'"),
        ([part("processor", "sleep"), part("params", '{"seconds": -1}')], "Invalid params"),
        ([part("colour", "red")], "Unknown form field"),
        ([part("processor", "inspect"), part("params", "not json")], "not valid JSON"),
    ],
    ids=["unknown-processor", "bad-params", "unknown-field", "params-not-json"],
)
def test_create_job_fails_fast_on_fields_sent_before_the_file(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
    fields: list[bytes],
    error: str,
) -> None:
    sinks = spy_on_uploads(monkeypatch, services)
    head = b"".join(fields) + file_head("big.bin")
    file_chunks = [b"f" * WRITE_CHUNK for _ in range(4)]
    chunks = [head, *file_chunks, f"\r\n--{BOUNDARY}--\r\n".encode()]
    consumed: list[int] = []

    with pytest.raises(Unprocessable, match=error):
        run_create_job(services, _consumption_recording_body(chunks, consumed))

    assert consumed == [0]  # not one chunk of the file was pulled
    assert all(sink.written == 0 for sink in sinks)
    assert_nothing_left(client, data_dir, dispatcher)


def test_params_before_the_file_wait_for_a_processor_sent_after_it(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    # Judged early against the default processor, these params would be refused; they are for
    # "sleep", which comes after the file.
    chunks = [
        part("params", '{"seconds": 0, "steps": 2}') + file_part(b"x" * 10, "a.txt"),
        part("processor", "sleep") + f"--{BOUNDARY}--\r\n".encode(),
    ]
    consumed: list[int] = []
    job = run_create_job(services, _consumption_recording_body(chunks, consumed))
    assert consumed == [0, 1]
    assert job.processor == "sleep"
    assert job.params == {"seconds": 0.0, "steps": 2, "ignore_cancel": False}
    assert_only_upload(data_dir, job.id)


def test_create_job_reads_the_whole_file_when_the_bad_field_comes_after_it(
    client: TestClient, services: Services, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    chunks = [
        file_head("a"),
        b"f" * WRITE_CHUNK,
        b"f" * WRITE_CHUNK,
        b"\r\n" + part("processor", "nope") + f"--{BOUNDARY}--\r\n".encode(),
    ]
    consumed: list[int] = []
    with pytest.raises(Unprocessable, match="Unknown processor"):
        run_create_job(services, _consumption_recording_body(chunks, consumed))
    assert consumed == [0, 1, 2, 3]
    assert_nothing_left(client, data_dir, dispatcher)


def test_create_job_with_a_generator_body_succeeds(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    content = b"abc" * 500_000
    body = multipart(part("processor", "upper"), file_part(content, "abc.txt"))
    job = run_create_job(services, agen(chunked(body, 100_000)))
    assert job.status == "queued"
    assert job.processor == "upper"
    assert job.file_size == len(content)
    assert job.file_sha256 == hashlib.sha256(content).hexdigest()
    assert job.file_content_type == "text/plain"
    assert job.declared_content_type == "text/plain"
    assert stored_content(data_dir, job.id) == content
    assert client.get(f"/v1/jobs/{job.id}").json()["file"]["sha256"] == job.file_sha256


@pytest.mark.parametrize(
    ("parts", "checks"),
    [
        # every field before the file and none after: the early check's result is the form's
        (lambda: (part("processor", "sleep"), part("params", '{"steps": 4}'), file_part()), 1),
        (lambda: (part("processor", "sleep"), file_part()), 1),
        (lambda: (part("callback_url", ""), file_part()), 1),
        # params before the file wait for the processor: checked in full at the end only
        (lambda: (part("params", '{"steps": 4}'), file_part(), part("processor", "sleep")), 2),
        # a field after the file: the form is checked again, in full
        (lambda: (part("processor", "sleep"), file_part(), part("params", '{"steps": 4}')), 2),
        (lambda: (file_part(), part("processor", "sleep")), 1),  # nothing before the file to check early
    ],
)
def test_the_form_is_validated_again_only_when_the_early_check_did_not_see_it_whole(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, parts: Any, checks: int
) -> None:
    from filejobs.jobs import submit

    calls: list[dict[str, str]] = []
    real = submit.validate_fields

    def counting(registry: Any, fields: Any) -> Any:
        calls.append(dict(fields))
        return real(registry, fields)

    monkeypatch.setattr(submit, "validate_fields", counting)
    response = client.post("/v1/jobs", content=multipart(*parts()), headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["processor"] == "sleep" or "processor" not in calls[-1]
    if any(b'name="params"' in p for p in parts()):
        assert job["params"] == {**SLEEP_DEFAULTS, "steps": 4}
    assert len(calls) == checks


def test_a_bad_field_after_the_file_is_refused_though_those_before_it_passed(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    body = multipart(part("processor", "sleep"), file_part(), part("params", '{"steps": "many"}'))
    response = client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert_problem(response, 422, data_dir)
    assert_nothing_left(client, data_dir, dispatcher)
