"""POST /v1/jobs: content types: a body that is not multipart (415), the file's type sniffed from
its bytes rather than taken from the client, and a processor refusing the sniffed type (415)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.testing import post_file
from tests.uploads.helpers import (
    BOUNDARY,
    PNG,
    assert_nothing_left,
    assert_problem,
    file_part,
    multipart,
    stored_content,
)

# ==== sniffed, not declared ====================================================================


@pytest.mark.parametrize(
    ("content", "declared", "name", "sniffed"),
    [
        (PNG, "text/plain", "photo.txt", "image/png"),
        (PNG, "application/octet-stream", "photo", "image/png"),
        (b"just some words\n", "image/png", "fake.png", "text/plain"),
        (b'{"a": [1, 2]}', "text/plain", "data.txt", "application/json"),
        (b"id,name\n1,ann\n2,bob\n", "application/pdf", "table.pdf", "text/csv"),
    ],
    ids=["png-declared-text", "png-no-extension", "text-declared-png", "json", "csv"],
)
def test_content_type_is_sniffed_not_taken_from_the_client(
    client: TestClient, data_dir: Path, content: bytes, declared: str, name: str, sniffed: str
) -> None:
    response = post_file(client, content, name=name, content_type=declared)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["content_type"] == sniffed
    assert job["file"]["name"] == name
    assert stored_content(data_dir, job["id"]) == content


# ==== 415: not multipart ========================================================================


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"json": {"file": "aGVsbG8="}}, "application/json"),
        ({"data": {"processor": "inspect", "file": "hello"}}, "application/x-www-form-urlencoded"),
        ({"content": b"hello world"}, "multipart/form-data"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, "text/plain"),
        (
            {
                "content": multipart(file_part()),
                "headers": {"content-type": f"multipart/mixed; boundary={BOUNDARY}"},
            },
            "multipart/mixed",
        ),
    ],
    ids=["json", "form-urlencoded", "no-content-type", "text-plain", "multipart-mixed"],
)
def test_non_multipart_bodies_are_415(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, kwargs: dict[str, Any], detail: str
) -> None:
    response = client.post("/v1/jobs", **kwargs)
    assert_problem(response, 415, data_dir, detail=detail)
    assert_nothing_left(client, data_dir, dispatcher)


def test_missing_content_type_really_has_no_header(client: TestClient, data_dir: Path) -> None:
    response = client.post("/v1/jobs", content=b"raw bytes")
    assert "content-type" not in response.request.headers
    assert_problem(response, 415, data_dir, detail="multipart/form-data")


# ==== 415: processor does not accept the sniffed type ===========================================


def test_processor_refusing_the_sniffed_type_is_415(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    # Declared as text/plain with a .txt name: the sniffed type decides, and text-only refuses it.
    response = post_file(
        client, PNG, name="not-an-image.txt", content_type="text/plain", processor="text-only"
    )
    problem = assert_problem(response, 415, data_dir, detail="does not accept image/png")
    assert problem["content_type"] == "image/png"
    assert problem["accepts"] == ["text/plain"]
    assert_nothing_left(client, data_dir, dispatcher)


def test_processor_accepting_the_sniffed_type_despite_a_wrong_declared_type(client: TestClient) -> None:
    response = post_file(
        client, b"plain words\n", name="x.png", content_type="image/png", processor="text-only"
    )
    assert response.status_code == 202, response.text
    assert response.json()["file"]["content_type"] == "text/plain"
