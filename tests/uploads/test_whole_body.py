"""The whole-body multipart split (:mod:`filejobs.multipart_whole`) against python-multipart.

A body that arrived whole is split without python-multipart only when it is plainly framed; on
every body it takes, the parts must be exactly those python-multipart reports (same headers, same
data, same end), and on every body python-multipart refuses it must step aside (None), so that the
refusal stays python-multipart's. Checked on the fault suite's corpus, on hand-made framings, and on
every one-byte deletion, duplication and replacement of plain bodies."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import pytest
from fastapi.testclient import TestClient
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from filejobs import uploads
from filejobs.errors import Problem
from filejobs.multipart_whole import split_whole
from filejobs.uploads import MAX_PART_HEADER_BYTES, MAX_PART_HEADERS, multipart_boundary
from tests.faults.multipart_corpus import CORPUS

B = b"whole-body-b0undary"
D = b"--" + B

Event = tuple[Any, ...]


def general(body: bytes, boundary: bytes = B) -> list[Event] | None:
    """python-multipart's parts of ``body`` as events (headers joined, data joined); None when it
    raises or the body does not reach its closing delimiter."""
    events: list[Event] = []
    field, value, data = bytearray(), bytearray(), bytearray()

    def header_end() -> None:
        events.append(("header", bytes(field), bytes(value)))
        field.clear()
        value.clear()

    def part_end() -> None:
        events.append(("data", bytes(data)))
        data.clear()
        events.append(("part_end",))

    callbacks = {
        "on_part_begin": lambda: events.append(("part_begin",)),
        "on_header_field": lambda d, s, e: field.extend(d[s:e]),
        "on_header_value": lambda d, s, e: value.extend(d[s:e]),
        "on_header_end": header_end,
        "on_headers_finished": lambda: events.append(("headers_finished",)),
        "on_part_data": lambda d, s, e: data.extend(d[s:e]),
        "on_part_end": part_end,
        "on_end": lambda: events.append(("end",)),
    }
    parser = MultipartParser(
        boundary,
        callbacks,  # type: ignore[arg-type]
        max_header_count=MAX_PART_HEADERS,
        max_header_size=MAX_PART_HEADER_BYTES,
    )
    try:
        parser.write(body)
    except MultipartParseError:
        return None
    return events if events and events[-1] == ("end",) else None


def whole(body: bytes, boundary: bytes = B) -> list[Event] | None:
    parts = split_whole(body, boundary, MAX_PART_HEADERS, MAX_PART_HEADER_BYTES)
    if parts is None:
        return None
    events: list[Event] = []
    for headers, start, end in parts:
        events.append(("part_begin",))
        events.extend(("header", name, value) for name, value in headers)
        events += [("headers_finished",), ("data", body[start:end]), ("part_end",)]
    events.append(("end",))
    return events


def assert_agrees(body: bytes, boundary: bytes = B) -> bool:
    """The split agrees with python-multipart (or steps aside); True when it took the body."""
    mine = whole(body, boundary)
    if mine is not None:
        assert mine == general(body, boundary), body
    return mine is not None


def part(name: bytes, content: bytes, *headers: bytes) -> bytes:
    head = b'Content-Disposition: form-data; name="' + name + b'"'
    return D + b"\r\n" + b"\r\n".join((head, *headers)) + b"\r\n\r\n" + content + b"\r\n"


FORM = (
    part(b"processor", b"inspect")
    + part(b"params", b'{"a": 1}')
    + part(b"file", b"x" * 40 + b"\r\n--whole\r\n" + D[:-1], b"Content-Type: text/plain")
    + D
    + b"--\r\n"
)


@pytest.mark.parametrize(
    "body",
    [
        FORM,
        FORM[:-2],  # no CRLF after the closing delimiter
        part(b"file", b"") + D + b"--",  # an empty part
        part(b"file", b"a", b"X-Empty:", b"X-Spaces:    v  ", b"X-Tab:\tv") + D + b"--\r\n",
        part(b"file", b"a", *[b"X-%d: v" % i for i in range(MAX_PART_HEADERS - 1)]) + D + b"--\r\n",
        part(b"file", b"a", b"X: " + b"v" * (MAX_PART_HEADER_BYTES - 3)) + D + b"--\r\n",
        part(b"file", b"data with " + D + b"x inside") + D + b"--\r\n",
        part(b"file", b"\r\n\r\n--\r\n") + D + b"--\r\n",
    ],
)
def test_plain_bodies_are_split_as_python_multipart_splits_them(body: bytes) -> None:
    assert general(body) is not None
    assert assert_agrees(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\r\n" + FORM,  # a preamble of newlines: python-multipart skips it
        b"preamble\r\n" + FORM,
        FORM + b"epilogue",  # python-multipart discards it
        FORM[:-2] + b"\r\n\r\n",
        FORM[: FORM.rindex(D)],  # no closing delimiter
        D + b"--\r\n",  # no part at all
        D + b"\r\n\r\ncontent\r\n" + D + b"--\r\n",  # a part without headers
        part(b"file", b"a", b"Bad Name: v") + D + b"--\r\n",
        part(b"file", b"a", b": v") + D + b"--\r\n",
        part(b"file", b"a", b"No-Colon") + D + b"--\r\n",
        part(b"file", b"a", b"X: a\rb") + D + b"--\r\n",
        part(b"file", b"a", b"X: a\nb") + D + b"--\r\n",
        part(b"file", b"a", *[b"X-%d: v" % i for i in range(MAX_PART_HEADERS)]) + D + b"--\r\n",
        part(b"file", b"a", b"X: " + b"v" * (MAX_PART_HEADER_BYTES - 2)) + D + b"--\r\n",
        part(b"file", b"a")[:-2] + b"\r\n" + D + b" \t\r\n" + part(b"x", b"b")[len(D) + 2 :] + D + b"--",
        part(b"file", b"a") + D + b"-\r\n",
        part(b"file", b"a") + D + b"x" + b"\r\n" + D + b"--",
    ],
)
def test_other_framings_are_left_to_python_multipart(body: bytes) -> None:
    assert whole(body) is None


def test_every_one_byte_change_of_a_plain_body_is_split_alike_or_left() -> None:
    base = (
        part(b"processor", b"inspect")
        + part(b"file", b"ab\r\ncd", b"Content-Type: text/plain")
        + D
        + b"--\r\n"
    )
    taken = 0
    for i in range(len(base)):
        variants = [base[:i] + base[i + 1 :], base[:i] + base[i : i + 1] * 2 + base[i + 1 :]]
        variants += [base[:i] + bytes([c]) + base[i + 1 :] for c in b"\r\n-: \tA\x00\xff"]
        for body in variants:
            taken += assert_agrees(body)
    assert taken > len(base)  # most changes inside the data or values keep the framing


def test_truncated_bodies_are_never_split() -> None:
    for end in range(len(FORM) - 2):
        assert whole(FORM[:end]) is None


def _corpus_bodies() -> list[tuple[str, bytes, bytes]]:
    bodies = []
    for case in CORPUS:
        content_type = dict(case.headers).get(b"Content-Type")
        try:
            boundary = multipart_boundary(content_type.decode("latin-1") if content_type else None)
        except Problem:
            continue
        chunks = list(itertools.islice(case.body(), 40))
        body = b"".join(chunks)
        if len(body) <= 2 * 1024 * 1024:
            bodies.append((case.name, body, boundary))
    return bodies


@pytest.mark.parametrize(
    ("name", "body", "boundary"), _corpus_bodies(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_fault_corpus_is_split_alike_or_left(name: str, body: bytes, boundary: bytes) -> None:
    assert_agrees(body, boundary)


class _Counted(MultipartParser):
    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).made += 1
        super().__init__(*args, **kwargs)


@pytest.mark.parametrize(
    ("preamble", "general_parser"),
    [(b"", 0), (b"\r\n", 1)],  # a plain body, then one only python-multipart takes
)
def test_a_whole_plain_upload_is_taken_without_python_multipart(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, preamble: bytes, general_parser: int
) -> None:
    monkeypatch.setattr(uploads, "MultipartParser", _Counted)
    _Counted.made = 0
    content = b"x" * 40 + b"\r\n--whole\r\n" + D[:-1]
    file_head = b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain'
    body = preamble + part(b"processor", b"inspect") + D + b"\r\n" + file_head + b"\r\n\r\n" + content
    body += b"\r\n" + D + b"--\r\n"
    response = client.post(
        "/v1/jobs", content=body, headers={"content-type": f"multipart/form-data; boundary={B.decode()}"}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["processor"] == "inspect"
    assert job["file"]["size"] == len(content)
    assert job["file"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert _Counted.made == general_parser
