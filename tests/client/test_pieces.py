"""The shared pieces: multipart framing, answers → models and errors, result files, settings."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import httpx
import pytest
from python_multipart.multipart import MultipartParser

from filejobs.client import (
    Client,
    ClientSettings,
    Conflict,
    Job,
    NotFound,
    ProblemError,
    ServerError,
    TransportError,
    UnexpectedResponse,
    UploadError,
)
from filejobs.client._common import problem
from filejobs.client._files import disposition_filename, safe_filename
from filejobs.client._multipart import frame
from filejobs.client._upload import ChunkReader
from tests.client.fakes import Script, accepted, job_body

BASE = "http://filejobs.test"


def parse_multipart(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body, as the server's parser sees them."""
    parts: list[tuple[dict[str, str], bytes]] = []
    name = bytearray()
    value = bytearray()

    def part_begin() -> None:
        parts.append(({}, b""))

    def header_field(data: bytes, start: int, end: int) -> None:
        name.extend(data[start:end])

    def header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def header_end() -> None:
        parts[-1][0][name.decode().lower()] = value.decode()
        name.clear()
        value.clear()

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1] = (parts[-1][0], parts[-1][1] + data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": part_begin,
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": part_data,
        },
    )
    parser.write(body)
    parser.finalize()
    return parts


def test_the_upload_body_is_well_formed_with_fields_first(text_file: Path) -> None:
    script = Script(accepted())
    with Client(BASE, transport=script.transport()) as client:
        client.submit(
            text_file,
            processor="sleep",
            params={"seconds": 1, "note": "ünï"},
            filename="ré sumé.txt",
            by_hash=False,  # the scripted server answers the upload itself
        )
    request, body = script.requests[0], script.bodies[0]
    assert int(request.headers["Content-Length"]) == len(body)
    media, _, boundary = request.headers["Content-Type"].partition("; boundary=")
    assert media == "multipart/form-data"
    parts = parse_multipart(body, boundary)
    assert [p[0]["content-disposition"].split(";")[1].strip() for p in parts] == [
        'name="processor"',
        'name="params"',
        'name="file"',
    ]
    assert parts[0][1] == b"sleep"
    assert parts[1][1].decode() == '{"seconds": 1, "note": "ünï"}'
    headers, content = parts[2]
    assert content == text_file.read_bytes()
    assert headers["content-type"] == "text/plain"
    assert "filename*=UTF-8''r%C3%A9%20sum%C3%A9.txt" in headers["content-disposition"]


def test_framing_lengths_and_escaped_names() -> None:
    framing = frame({}, filename='a"b\r\nc.txt', boundary="XyZ")
    assert framing.head == (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a%22b%0D%0Ac.txt"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    assert framing.tail == b"\r\n--XyZ--\r\n"
    assert framing.content_length(100) == len(framing.head) + 100 + len(framing.tail)
    assert framing.content_length(None) is None


def test_a_file_that_changes_size_while_uploading_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(b"x" * (2 * 1024 * 1024))

    def grow(sent: int) -> None:
        with open(path, "ab") as f:
            f.write(b"more")

    script = Script(accepted())
    with (
        Client(BASE, transport=script.transport()) as client,
        pytest.raises(UploadError, match="changed size"),
    ):
        client.submit(path, on_progress=grow, by_hash=False)
    with pytest.raises(UploadError):
        ChunkReader(io.BytesIO(b""), 10).read()
    reader = ChunkReader(io.BytesIO(b"short"), 10)
    assert reader.read() == b"short"
    with pytest.raises(UploadError):
        reader.read()


# ---- answers → errors and models -----------------------------------------------------------------


def _response(status: int, **kwargs: object) -> httpx.Response:
    response = httpx.Response(status, request=httpx.Request("GET", f"{BASE}/v1/jobs/x"), **kwargs)  # type: ignore[arg-type]
    response.read()
    return response


def test_problem_details_become_typed_errors() -> None:
    body = {
        "type": "https://filejobs.dev/problems/conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "The job is running.",
        "status_of_job": "running",
    }
    error = problem(_response(409, json=body))
    assert isinstance(error, Conflict)
    assert (error.status, error.title, error.detail) == (409, "Conflict", "The job is running.")
    assert error.body == body
    assert error.type == body["type"]
    assert str(error) == "409 Conflict: The job is running."

    assert isinstance(problem(_response(404, json=body)), NotFound)
    assert type(problem(_response(418, json={}))) is ProblemError


def test_non_json_error_bodies_fall_back_to_the_text() -> None:
    error = problem(_response(502, text="<html>Bad gateway</html>", headers={"Retry-After": "7"}))
    assert isinstance(error, ServerError)
    assert error.title == "Bad Gateway"
    assert error.detail == "<html>Bad gateway</html>"
    assert error.body == {"status": 502, "title": "Bad Gateway", "detail": "<html>Bad gateway</html>"}
    assert error.retry_after == 7.0
    empty = problem(_response(500))
    assert (empty.title, empty.detail, empty.errors, empty.type) == ("Internal Server Error", "", [], None)


def test_a_body_outside_the_contract_is_an_unexpected_response() -> None:
    script = Script(httpx.Response(200, json={"hello": "world"}), httpx.Response(200, text="not json"))
    with Client(BASE, transport=script.transport()) as client:
        with pytest.raises(UnexpectedResponse, match="not a Job"):
            client.get("x")
        with pytest.raises(UnexpectedResponse):
            client.get("x")


def test_the_job_model_ignores_members_it_does_not_know() -> None:
    job = Job.model_validate(job_body(status="succeeded", future_field={"x": 1}))
    assert job.terminal
    assert job.succeeded
    assert not Job.model_validate(job_body(status="running")).terminal


# ---- result files -------------------------------------------------------------------------------


def test_disposition_names() -> None:
    assert disposition_filename('attachment; filename="a b.txt"') == "a b.txt"
    assert disposition_filename("attachment; filename*=utf-8''na%C3%AFve.txt") == "naïve.txt"
    assert disposition_filename("attachment; filename=\"plain.txt\"; filename*=UTF-8''%C3%A9.txt") == "é.txt"
    assert disposition_filename("attachment") is None
    assert disposition_filename(None) is None


def test_safe_names_stay_in_their_directory() -> None:
    assert safe_filename("../../etc/passwd", "x") == "passwd"
    assert safe_filename("..\\..\\boot.ini", "x") == "boot.ini"
    assert safe_filename("..", "fallback") == "fallback"
    assert safe_filename(".hidden", "x") == "hidden"
    assert safe_filename("a\x00b\u202ec.txt", "x") == "abc.txt"
    assert safe_filename(None, "fallback") == "fallback"
    assert len(safe_filename("é" * 300, "x").encode()) <= 255


def test_a_hostile_result_name_is_written_inside_the_directory(tmp_path: Path) -> None:
    answer = httpx.Response(
        200, content=b"payload", headers={"Content-Disposition": 'attachment; filename="../../evil.sh"'}
    )
    script = Script(answer)
    with Client(BASE, transport=script.transport()) as client:
        assert client.result("job-1", to=tmp_path) == tmp_path / "evil.sh"
    assert (tmp_path / "evil.sh").read_bytes() == b"payload"
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name == "evil.sh") == []


def test_a_trailing_slash_names_a_directory_to_create(tmp_path: Path) -> None:
    answer = httpx.Response(
        200, content=b"x", headers={"Content-Disposition": 'attachment; filename="r.txt"'}
    )
    with Client(BASE, transport=Script(answer).transport()) as client:
        assert client.result("job-1", to=f"{tmp_path}/new/dir/") == tmp_path / "new" / "dir" / "r.txt"
        assert client.result("job-1", to=tmp_path / "plain") == tmp_path / "plain"
    assert (tmp_path / "plain").read_bytes() == b"x"


def test_a_result_file_gets_the_mode_the_umask_gives(tmp_path: Path) -> None:
    answer = httpx.Response(
        200, content=b"x", headers={"Content-Disposition": 'attachment; filename="r.txt"'}
    )
    previous = os.umask(0o022)
    try:
        with Client(BASE, transport=Script(answer).transport()) as client:
            path = client.result("job-1", to=tmp_path)
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(previous)


def test_a_download_that_breaks_leaves_no_file(tmp_path: Path) -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield b"first half"
            raise httpx.ReadError("connection reset")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=Broken(), headers={"Content-Disposition": 'attachment; filename="r.bin"'}
        )

    script = Script(answer)
    with Client(BASE, transport=script.transport()) as client, pytest.raises(TransportError, match="reset"):
        client.result("job-1", to=tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ClientSettings().url == "http://127.0.0.1:8000"
    assert ClientSettings().api_key is None
    monkeypatch.setenv("FILEJOBS_URL", "https://jobs.example")
    monkeypatch.setenv("FILEJOBS_API_KEY", "s3cr3t-key")
    monkeypatch.setenv("FILEJOBS_DATA_DIR", "/srv/data")  # a server setting: ignored here
    settings = ClientSettings()
    assert (settings.url, settings.api_key) == ("https://jobs.example", "s3cr3t-key")
    assert "s3cr3t" not in repr(settings)
    explicit = Client("http://given.test", settings=ClientSettings(url="http://ignored.test", api_key="x"))
    assert explicit.base_url == "http://given.test"
    explicit.close()


def test_the_upload_by_hash_is_a_form_of_text_fields_then_the_file_after_a_428(text_file: Path) -> None:
    from tests.client.fakes import problem as problem_answer

    script = Script(problem_answer(428), accepted())
    with Client(BASE, transport=script.transport()) as client:
        client.submit(text_file, processor="sleep", reuse=False)
    first, second = script.bodies
    boundary = script.requests[0].headers["Content-Type"].partition("; boundary=")[2]
    fields = {p[0]["content-disposition"].split('"')[1]: p[1] for p in parse_multipart(first, boundary)}
    assert fields == {
        "processor": b"sleep",
        "reuse": b"false",
        "file_sha256": hashlib.sha256(text_file.read_bytes()).hexdigest().encode(),
        "file_name": b"hello.txt",
        "file_size": str(text_file.stat().st_size).encode(),
    }
    assert script.requests[0].headers["Idempotency-Key"] == script.requests[1].headers["Idempotency-Key"]
    assert second.count(text_file.read_bytes()) == 1
