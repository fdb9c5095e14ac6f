"""POST /v1/jobs: the size and count limits (413), inclusive, checked before and while reading."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.uploads import WRITE_CHUNK
from tests.uploads.helpers import (
    MULTIPART,
    SURELY_WRITTEN,
    App,
    MiB,
    as_response,
    asgi_post,
    assert_nothing_left,
    assert_only_upload,
    assert_problem,
    chunked,
    file_part,
    multipart,
    part,
    spy_on_uploads,
)

# ==== 413: limits ===============================================================================


def test_limits_are_inclusive(make_app: Callable[..., App]) -> None:
    app = make_app(max_upload_bytes=1000, max_fields=2, max_field_bytes=40)
    params = json.dumps({"seconds": 0}).ljust(40)
    assert len(params) == 40
    content = b"x" * 1000
    body = multipart(part("processor", "sleep"), part("params", params), file_part(content))
    response = app.client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["size"] == 1000
    assert job["params"]["seconds"] == 0
    assert_only_upload(app.data_dir, job["id"])


def test_content_length_over_the_limit_is_refused_before_reading(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(max_upload_bytes=1000, max_fields=1, max_field_bytes=100)
    sinks = spy_on_uploads(monkeypatch, app.services)
    body = multipart(file_part(b"x" * (100 * 1024)))
    response = app.client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert int(response.request.headers["content-length"]) == len(body)
    problem = assert_problem(response, 413, app.data_dir, detail="at most 1000 bytes")
    assert problem["max_file_bytes"] == 1000
    assert sinks == []  # refused from the header: no upload was even opened
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_huge_declared_content_length_is_413(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    response = client.post(
        "/v1/jobs", content=multipart(file_part()), headers={**MULTIPART, "content-length": str(10**15)}
    )
    assert_problem(response, 413, data_dir)
    assert_nothing_left(client, data_dir, dispatcher)


def test_file_over_the_limit_without_content_length_is_413(make_app: Callable[..., App]) -> None:
    app = make_app(max_upload_bytes=1000)
    body = multipart(file_part(b"y" * 1001))
    response = app.client.post("/v1/jobs", content=chunked(body, 300), headers=MULTIPART)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    problem = assert_problem(response, 413, app.data_dir, detail="larger than the limit of 1000 bytes")
    assert problem["max_file_bytes"] == 1000
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_file_over_the_limit_behind_a_lying_small_content_length_is_413(make_app: Callable[..., App]) -> None:
    app = make_app(max_upload_bytes=1000)
    body = multipart(file_part(b"y" * 5000))
    response = app.client.post("/v1/jobs", content=body, headers={**MULTIPART, "content-length": "300"})
    assert response.request.headers["content-length"] == "300"
    assert_problem(response, 413, app.data_dir, detail="larger than the limit")
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_streamed_file_over_the_limit_removes_the_partial_file(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(max_upload_bytes=SURELY_WRITTEN * MiB)
    sinks = spy_on_uploads(monkeypatch, app.services)
    body = multipart(file_part(b"q" * ((SURELY_WRITTEN + 1) * MiB)))
    status, headers, raw = asgi_post(app.client, chunked(body, 256 * 1024), MULTIPART)
    assert_problem(as_response(status, headers, raw), 413, app.data_dir, detail="larger than the limit")
    [sink] = sinks
    assert sink.written >= WRITE_CHUNK
    assert sink.largest_temp_file >= WRITE_CHUNK  # part of the file had reached the disk
    assert sink.aborted
    assert sink.committed is None
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_too_many_parts_is_413(client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher) -> None:
    max_fields = client.app_state["services"].settings.max_fields
    fields = [part(f"field{i}", "v") for i in range(max_fields + 1)]
    response = client.post("/v1/jobs", content=multipart(*fields, file_part()), headers=MULTIPART)
    assert_problem(response, 413, data_dir, detail="Too many form parts")
    assert_nothing_left(client, data_dir, dispatcher)


def test_one_part_over_max_fields_plus_file_is_413(make_app: Callable[..., App]) -> None:
    app = make_app(max_fields=2)
    body = multipart(part("processor", "inspect"), part("params", "{}"), file_part(), part("extra", "x"))
    response = app.client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert_problem(response, 413, app.data_dir, detail="at most 2 fields and one file")
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


@pytest.mark.parametrize("where", ["before-file", "after-file"])
def test_oversized_form_field_is_413(make_app: Callable[..., App], where: str) -> None:
    app = make_app(max_field_bytes=100)
    params = part("params", "{" + " " * 200 + "}")
    parts = (params, file_part()) if where == "before-file" else (file_part(), params)
    response = app.client.post("/v1/jobs", content=multipart(*parts), headers=MULTIPART)
    assert_problem(response, 413, app.data_dir, detail="'params' is larger than 100 bytes")
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)


def test_endless_epilogue_is_cut_off_at_the_body_limit(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without Content-Length, bytes after the closing boundary must not stream in without end.
    app = make_app(max_upload_bytes=1000, max_fields=1, max_field_bytes=100)
    consumed = 0

    def body() -> Iterator[bytes]:
        nonlocal consumed
        yield multipart(file_part(b"small file\n"))
        for _ in range(10_000):  # up to 640 MiB of epilogue
            consumed += 1
            yield b"e" * 65536

    status, headers, raw = asgi_post(app.client, body(), MULTIPART)
    assert_problem(as_response(status, headers, raw), 413, app.data_dir)
    assert consumed <= 4  # stopped right after the body limit (~66 KB here), not at the end
    assert_nothing_left(app.client, app.data_dir, app.dispatcher)
