"""The sync client against a real ``filejobs serve`` process (one per module)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from filejobs.client import (
    Client,
    Conflict,
    FilejobsError,
    NotFound,
    ProblemError,
    Unprocessable,
    WaitTimeout,
    file_sha256,
)
from filejobs.testing import Server

pytestmark = pytest.mark.e2e

SLEEPY = {"seconds": 60, "steps": 600}


class Recording(httpx.HTTPTransport):
    """The real transport, remembering every request it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.base_url, timeout=30) as client:
        yield client


def test_submit_wait_and_json_result(client: Client, text_file: Path) -> None:
    job = client.submit(text_file)
    assert job.status in ("queued", "running", "succeeded")
    assert job.processor == "inspect"
    assert job.file.name == "hello.txt"
    assert job.file.size == text_file.stat().st_size
    assert job.file.sha256 == file_sha256(text_file)
    assert job.links.self == f"/v1/jobs/{job.id}"

    done = client.wait(job.id, timeout=30)
    assert done.status == "succeeded"
    assert done.terminal
    assert done.succeeded
    assert done.finished_at is not None
    assert done.progress == 1.0
    result = client.result(job.id)
    assert isinstance(result, dict)
    assert result["lines"] == 2
    assert result["words"] == 4
    assert client.get(job.id) == done


def test_file_result_to_a_path_a_directory_a_file_object_and_the_cwd(
    client: Client, text_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = client.submit(text_file, processor="upper")
    assert client.wait(job.id, timeout=30).status == "succeeded"
    expected = text_file.read_bytes().upper()

    target = tmp_path / "deep" / "out.txt"
    assert client.result(job.id, to=target) == target
    assert target.read_bytes() == expected

    folder = tmp_path / "results"
    folder.mkdir()
    path = client.result(job.id, to=folder)
    assert path == folder / "hello.txt.upper.txt"
    assert path.read_bytes() == expected

    buffer = io.BytesIO()
    assert client.result(job.id, to=buffer) is None
    assert buffer.getvalue() == expected

    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    assert client.result(job.id) == here / "hello.txt.upper.txt"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.endswith(".part")) == []


def test_submit_a_file_object_with_an_unusual_name(client: Client) -> None:
    stream = io.BytesIO(b"ignored prefix|payload\n")
    stream.seek(len(b"ignored prefix|"))
    job = client.submit(stream, filename='na"ïve\r\nname.txt', processor="upper")
    assert job.file.name == 'na"ïvename.txt'
    assert job.file.size == len(b"payload\n")
    assert client.wait(job.id, timeout=30).status == "succeeded"
    buffer = io.BytesIO()
    client.result(job.id, to=buffer)
    assert buffer.getvalue() == b"PAYLOAD\n"


def test_on_progress_counts_the_file_bytes_in_chunks(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    size = 3 * 1024 * 1024 + 12345
    path.write_bytes(b"x" * size)
    seen: list[int] = []
    job = client.submit(path, on_progress=seen.append)
    assert job.file.size == size
    assert seen == [1024 * 1024, 2 * 1024 * 1024, 3 * 1024 * 1024, size]


def test_list_follows_the_cursor_page_by_page(server: Server, text_file: Path) -> None:
    transport = Recording()
    with Client(server.base_url, transport=transport) as client:
        ids = [client.submit(text_file, processor="fail", params={"code": f"c{i}"}).id for i in range(5)]
        for job_id in ids:
            assert client.wait(job_id, timeout=30).status == "failed"
        transport.requests.clear()

        listed = [job.id for job in client.list(processor="fail", page_size=2)]
        assert listed == ids[::-1]  # newest first
        pages = [r for r in transport.requests if r.url.path == "/v1/jobs"]
        assert len(pages) == 3
        assert [r.url.params.get("limit") for r in pages] == ["2", "2", "2"]
        assert "cursor" not in pages[0].url.params
        assert pages[1].url.params["cursor"]

        failed = list(client.list(status="failed", processor="fail"))
        assert [job.id for job in failed] == ids[::-1]
        assert {job.error.code for job in failed if job.error} == {f"c{i}" for i in range(5)}
        assert list(client.list(status="succeeded", processor="fail")) == []

        page = client.list_page(processor="fail", limit=4)
        assert [job.id for job in page.items] == ids[:0:-1]
        assert page.next_cursor


def test_cancel_retry_delete(client: Client, text_file: Path) -> None:
    job = client.submit(text_file, processor="sleep", params=SLEEPY)
    cancelled = client.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert cancelled.terminal
    with pytest.raises(Conflict) as info:
        client.cancel(job.id)
    assert info.value.status == 409
    assert info.value.detail == "The job is already cancelled."
    assert info.value.body["status_of_job"] == "cancelled"

    again = client.retry(job.id)
    assert again.status == "queued"
    assert again.attempts == 0
    with pytest.raises(Conflict):
        client.retry(job.id)
    with pytest.raises(Conflict) as result_info:
        client.result(job.id)
    assert result_info.value.body["status_of_job"] in ("queued", "running")

    client.delete(job.id)
    with pytest.raises(NotFound):
        client.get(job.id)
    with pytest.raises(NotFound):
        client.delete(job.id)


def test_not_found_carries_the_problem_details(client: Client) -> None:
    with pytest.raises(NotFound) as info:
        client.get("no-such-job")
    error = info.value
    assert isinstance(error, ProblemError)
    assert isinstance(error, FilejobsError)
    assert error.status == 404
    assert error.title == "Not Found"
    assert "no-such-job" in error.detail
    assert "no-such-job" in str(error)
    assert error.type == "https://filejobs.dev/problems/not-found"
    assert error.body["instance"] == "/v1/jobs/no-such-job"


def test_unprocessable_carries_the_errors(client: Client, text_file: Path) -> None:
    with pytest.raises(Unprocessable) as info:
        client.submit(text_file, processor="sleep", params={"seconds": -1})
    assert info.value.status == 422
    assert "params" in info.value.detail.lower()
    assert [e["loc"] for e in info.value.errors] == [["seconds"]]

    with pytest.raises(Unprocessable) as unknown:
        client.submit(text_file, processor="no-such-processor")
    assert "no-such-processor" in unknown.value.detail
    assert unknown.value.errors == []

    with pytest.raises(Unprocessable):
        client.list_page(limit=100_000)  # over the server's page limit


def test_a_failed_job_has_its_error_and_no_result(client: Client, text_file: Path) -> None:
    job = client.submit(text_file, processor="fail", params={"code": "nope", "message": "no way"})
    done = client.wait(job.id, timeout=30)
    assert done.status == "failed"
    assert done.terminal
    assert not done.succeeded
    assert done.error is not None
    assert (done.error.code, done.error.message) == ("nope", "no way")
    with pytest.raises(Conflict):
        client.result(job.id)


def test_wait_gives_up_at_the_timeout_with_the_last_state(client: Client, text_file: Path) -> None:
    job = client.submit(text_file, processor="sleep", params=SLEEPY)
    try:
        with pytest.raises(WaitTimeout) as info:
            client.wait(job.id, timeout=0.5)
        assert info.value.job_id == job.id
        assert info.value.job is not None
        assert info.value.job.status in ("queued", "running")
        with pytest.raises(WaitTimeout):
            client.wait(job.id, timeout=0)
    finally:
        client.delete(job.id)


def test_a_long_poll_outlasts_a_short_client_timeout(server: Server, text_file: Path) -> None:
    with Client(server.base_url, timeout=0.5) as client:
        job = client.submit(text_file, processor="sleep", params={"seconds": 60, "steps": 1})  # no progress
        try:
            with pytest.raises(WaitTimeout):  # not a read timeout after 0.5 s
                client.wait(job.id, timeout=1.5)
        finally:
            client.delete(job.id)


def test_wait_long_polls_instead_of_looping(server: Server, text_file: Path) -> None:
    transport = Recording()
    updates: list[str] = []
    with Client(server.base_url, transport=transport) as client:
        job = client.submit(text_file, processor="sleep", params={"seconds": 1.5, "steps": 3})
        done = client.wait(job.id, timeout=30, on_update=lambda j: updates.append(f"{j.status}:{j.progress}"))
    assert done.status == "succeeded"
    gets = [r for r in transport.requests if r.method == "GET"]
    assert "wait" not in gets[0].url.params  # a finished job answers at once
    for request in gets[1:]:
        assert float(request.url.params["wait"]) > 0
        assert request.headers["If-None-Match"].startswith(f'"{job.id}.')
    # one answer per change (queued → running → 3 progress steps → succeeded), never a busy loop
    assert len(gets) <= 8, [str(r.url) for r in gets]
    assert updates[-1] == "succeeded:1.0"


def test_processors_are_listed_with_their_schema(client: Client) -> None:
    processors = {p.name: p for p in client.processors()}
    assert {"inspect", "upper", "sleep"} <= set(processors)
    assert processors["upper"].accepts == ["text/*"]
    assert "seconds" in processors["sleep"].params_schema["properties"]


def test_a_missing_file_fails_before_any_request(client: Client, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        client.submit(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError):
        client.submit(tmp_path)
    assert not os.path.exists(tmp_path / "missing.txt")
