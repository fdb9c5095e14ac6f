"""``GET /v1/jobs/{id}/result`` of an output file on the local disk (``filejobs.api.result_file``):
conditional requests and byte ranges as RFC 9110 says, every refusal a problem."""

from __future__ import annotations

import inspect

import pytest
from fastapi.testclient import TestClient
from starlette import responses

from filejobs.jobs import repository
from filejobs.jobs.worker import LocalWorker
from filejobs.services import Services
from filejobs.testing import submit
from tests.test_api import assert_problem

CONTENT = b"shout this\n"
OUTPUT = CONTENT.upper()


@pytest.fixture
def result_url(client: TestClient, worker: LocalWorker) -> str:
    job = submit(client, content=CONTENT, name="quiet.txt", processor="upper")
    worker.drain()
    return f"/v1/jobs/{job['id']}/result"


def test_the_starlette_internals_this_relies_on() -> None:
    """Fails loudly when Starlette renames what ResultFile reads."""
    assert issubclass(responses.MalformedRangeHeader, Exception)
    assert issubclass(responses.RangeNotSatisfiable, Exception)
    assert list(inspect.signature(responses.FileResponse._parse_range_header).parameters) == [
        "http_range",
        "file_size",
    ]
    assert callable(responses.FileResponse._should_use_range)


def test_a_matching_if_none_match_gets_304(client: TestClient, result_url: str) -> None:
    first = client.get(result_url)
    assert first.status_code == 200
    assert first.content == OUTPUT
    etag = first.headers["etag"]
    for value in (etag, f"W/{etag}", "*", f'"other", {etag}'):
        again = client.get(result_url, headers={"If-None-Match": value})
        assert again.status_code == 304, value
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["last-modified"] == first.headers["last-modified"]
        assert again.headers["x-content-type-options"] == "nosniff"  # the security headers too
    other = client.get(result_url, headers={"If-None-Match": '"other"'})
    assert other.status_code == 200
    assert other.content == OUTPUT


@pytest.mark.parametrize(
    ("byte_range", "status", "body"),
    [
        ("bytes=0-4", 206, OUTPUT[:5]),
        ("bytes=-3", 206, OUTPUT[-3:]),
        ("bytes=6-", 206, OUTPUT[6:]),
        ("bytes=6-1000", 206, OUTPUT[6:]),
        # Not a valid bytes range, or another unit: ignored, the whole file (RFC 9110 14.2).
        ("bytes=abc", 200, OUTPUT),
        ("bytes=5-3", 200, OUTPUT),
        ("items=0-1", 200, OUTPUT),
        ("0-1", 200, OUTPUT),
    ],
)
def test_a_range_is_served_or_ignored(
    client: TestClient, result_url: str, byte_range: str, status: int, body: bytes
) -> None:
    response = client.get(result_url, headers={"Range": byte_range})
    assert response.status_code == status, response.text
    assert response.content == body


def test_two_ranges_get_a_multipart_answer(client: TestClient, result_url: str) -> None:
    response = client.get(result_url, headers={"Range": "bytes=0-1,6-7"})
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges")
    assert OUTPUT[0:2] in response.content
    assert OUTPUT[6:8] in response.content


@pytest.mark.parametrize("byte_range", ["bytes=11-", "bytes=100-200", "bytes=50-60,70-80"])
def test_a_range_past_the_end_is_a_416_problem(client: TestClient, result_url: str, byte_range: str) -> None:
    response = client.get(result_url, headers={"Range": byte_range})
    problem = assert_problem(response, 416)
    assert response.headers["content-range"] == f"bytes */{len(OUTPUT)}"
    assert str(len(OUTPUT)) in problem["detail"]


def test_if_range_that_does_not_match_serves_the_whole_file(client: TestClient, result_url: str) -> None:
    """The range is only considered when If-Range names the current file: a 200 even for one past
    the end."""
    for byte_range in ("bytes=0-4", "bytes=100-"):
        response = client.get(result_url, headers={"Range": byte_range, "If-Range": '"stale"'})
        assert response.status_code == 200
        assert response.content == OUTPUT
    etag = client.get(result_url).headers["etag"]
    matching = client.get(result_url, headers={"Range": "bytes=0-4", "If-Range": etag})
    assert matching.status_code == 206
    assert matching.content == OUTPUT[:5]


def test_an_output_gone_from_disk_is_410(client: TestClient, services: Services, result_url: str) -> None:
    job = repository.get_job(services.db, result_url.split("/")[3])
    assert job is not None
    assert job.output_key is not None
    path = services.storage.local_path(job.output_key)
    assert path is not None
    path.unlink()
    assert_problem(client.get(result_url), 410)
    assert_problem(client.get(result_url, headers={"Range": "bytes=0-1"}), 410)
