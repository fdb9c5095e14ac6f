"""POST /v1/jobs: malformed multipart bodies and bad Content-Length headers (400), and what a
truncated body leaves behind (nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.services import Services
from filejobs.uploads import WRITE_CHUNK
from tests.uploads.helpers import (
    BOUNDARY,
    MULTIPART,
    SURELY_WRITTEN,
    as_response,
    asgi_post,
    assert_nothing_left,
    assert_problem,
    chunked,
    file_part,
    multipart,
    part,
    spy_on_uploads,
)

# ==== 400: malformed multipart, bad Content-Length ==============================================


def _big_truncated_body() -> bytes:
    # Several write chunks arrive before the body stops: streamed, a temp file exists by then.
    return multipart(file_part(b"z" * (SURELY_WRITTEN * WRITE_CHUNK + 10)), close=False)


MALFORMED: list[tuple[str, bytes, dict[str, str], str]] = [
    ("no-boundary", multipart(file_part()), {"content-type": "multipart/form-data"}, "boundary"),
    (
        "empty-boundary",
        multipart(file_part()),
        {"content-type": "multipart/form-data; boundary="},
        "boundary",
    ),
    (
        "boundary-over-70",
        b"--" + b"b" * 71 + b"\r\n",
        {"content-type": "multipart/form-data; boundary=" + "b" * 71},
        "boundary",
    ),
    ("garbage", b"this is not a multipart body at all", MULTIPART, "malformed"),
    ("preamble-garbage-before-boundary", b"junk\r\n" + multipart(file_part()), MULTIPART, "malformed"),
    ("bad-header-line", f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n".encode(), MULTIPART, "malformed"),
    ("empty-body", b"", MULTIPART, "closing boundary"),
    ("truncated-no-closing-boundary", multipart(file_part(), close=False), MULTIPART, "closing boundary"),
    ("truncated-mid-file", multipart(file_part(b"abcdef" * 100))[:200], MULTIPART, "closing boundary"),
    ("truncated-in-headers", f"--{BOUNDARY}\r\nContent-Disposition: form-da".encode(), MULTIPART, "closing"),
    ("truncated-big-file", _big_truncated_body(), MULTIPART, "closing boundary"),
    (
        "part-without-content-disposition",
        multipart(part(None, "hi", disposition=b"Content-Type: text/plain\r\n")),
        MULTIPART,
        "Content-Disposition",
    ),
    (
        "content-disposition-without-name",
        multipart(part(None, "hi", filename="a.txt")),
        MULTIPART,
        "no name",
    ),
    (
        "too-many-part-headers",
        multipart(
            part(
                "file", "hi", filename="a.txt", extra_headers=b"".join(b"X-H%d: v\r\n" % i for i in range(8))
            )
        ),
        MULTIPART,
        "header",
    ),
    (
        "part-header-too-big",
        multipart(part("file", "hi", filename="a.txt", extra_headers=b"X-Big: " + b"v" * 9000 + b"\r\n")),
        MULTIPART,
        "header",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "detail"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_multipart_is_400(
    client: TestClient,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    body: bytes,
    headers: dict[str, str],
    detail: str,
) -> None:
    response = client.post("/v1/jobs", content=body, headers=headers)
    problem = assert_problem(response, 400, data_dir)
    assert detail.lower() in problem["detail"].lower()
    assert_nothing_left(client, data_dir, dispatcher)


def test_truncated_body_removes_the_partly_written_temp_file(
    client: TestClient,
    services: Services,
    data_dir: Path,
    dispatcher: InMemoryDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sinks = spy_on_uploads(monkeypatch, services)
    body = _big_truncated_body()
    status, headers, raw = asgi_post(client, chunked(body, 256 * 1024), MULTIPART)
    assert_problem(as_response(status, headers, raw), 400, data_dir, detail="closing boundary")
    [sink] = sinks
    assert sink.largest_temp_file >= WRITE_CHUNK  # it really was on disk ...
    assert sink.aborted
    assert sink.committed is None
    assert_nothing_left(client, data_dir, dispatcher)  # ... and now it is gone


@pytest.mark.parametrize("value", ["-1", "-100", "abc", "1.5", "1e3", "0x10", "", " 12", "+5"])
def test_invalid_content_length_is_400(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher, value: str
) -> None:
    response = client.post(
        "/v1/jobs", content=multipart(file_part()), headers={**MULTIPART, "content-length": value}
    )
    assert response.request.headers["content-length"] == value
    assert_problem(response, 400, data_dir, detail="Content-Length")
    assert_nothing_left(client, data_dir, dispatcher)


def test_non_ascii_digit_content_length_is_400_not_500(
    client: TestClient, data_dir: Path, dispatcher: InMemoryDispatcher
) -> None:
    # "\xb2" (superscript two, one latin-1 byte) is a digit to str.isdigit() but not to int().
    # The TestClient re-encodes header values, so the raw byte is sent through asgi_post.
    status, headers, raw = asgi_post(
        client, [multipart(file_part())], {**MULTIPART, "content-length": "\xb2"}
    )
    assert_problem(as_response(status, headers, raw), 400, data_dir, detail="Content-Length")
    assert_nothing_left(client, data_dir, dispatcher)
