"""Retries: which failures are retried, how long the client waits, and when it gives up."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import anyio
import httpx
import pytest

from filejobs.client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    Retrying,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    TransportError,
    Unprocessable,
    WaitTimeout,
)
from filejobs.client._retry import Attempts, RetryPolicy, parse_retry_after
from filejobs.testing import free_port
from tests.client.fakes import Script, accepted, job_body, problem

JOB_ID = job_body()["id"]


def unavailable(retry_after: str | None = None) -> httpx.Response:
    return problem(503, "busy", **({"Retry-After": retry_after} if retry_after is not None else {}))


# The scripted server answers the upload itself: the submits here skip the try by hash first
# (by_hash=False); it is tested against a real server in tests/cli/test_submit_dedup.py.
def fast_client(script: Script, **kwargs: object) -> Client:
    kwargs.setdefault("backoff", 0.0)
    return Client("http://filejobs.test", transport=script.transport(), **kwargs)  # type: ignore[arg-type]


# ---- the policy ---------------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(days=1), usegmt=True), now=now) == 0.0
    for junk in (None, "", "soon", "-1", "1.5", "²"):
        assert parse_retry_after(junk, now=now) is None


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    top = RetryPolicy(backoff=0.5, backoff_max=30.0, random=lambda: 1.0)
    assert [top.backoff_delay(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert top.backoff_delay(10_000) == 30.0
    quarter = RetryPolicy(backoff=1.0, backoff_max=30.0, random=lambda: 0.25)
    assert [quarter.backoff_delay(n) for n in range(3)] == [0.25, 0.5, 1.0]
    assert RetryPolicy(random=lambda: 0.0).backoff_delay(3) == 0.0
    assert top.delay(4, retry_after=2.0) == 2.0  # Retry-After wins over the backoff
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(retries=-1)


def test_attempts_classify_transport_errors() -> None:
    request = httpx.Request("POST", "http://filejobs.test/v1/jobs/x/cancel")
    unsafe = Attempts(RetryPolicy(retries=3, random=lambda: 0.0), safe=False)
    assert unsafe.after_error(httpx.ConnectError("refused"), request) == 0.0
    assert unsafe.after_error(httpx.ConnectTimeout("slow"), request) == 0.0
    with pytest.raises(TransportError) as info:
        unsafe.after_error(httpx.ReadError("reset"), request)  # the cancel may have happened
    assert info.value.attempts == 3
    assert "after 3 attempts" in str(info.value)

    safe = Attempts(RetryPolicy(retries=1, random=lambda: 0.0), safe=True)
    assert safe.after_error(httpx.RemoteProtocolError("closed"), request) == 0.0
    with pytest.raises(TransportError):
        safe.after_error(httpx.ReadTimeout("slow"), request)  # out of retries
    never = Attempts(RetryPolicy(), safe=True)
    with pytest.raises(TransportError):
        never.after_error(httpx.UnsupportedProtocol("ftp://"), request)
    with pytest.raises(TransportError):
        never.after_error(httpx.LocalProtocolError("bad header"), request)


# ---- 503 / 429 with Retry-After -------------------------------------------------------------------


def test_503_with_retry_after_is_waited_out_and_the_upload_repeated(text_file: Path) -> None:
    script = Script(unavailable("1"), unavailable("1"), accepted())
    progress: list[int] = []
    size = text_file.stat().st_size
    with fast_client(script, backoff=10.0) as client:  # a backoff would be far longer: Retry-After rules
        started = time.monotonic()
        job = client.submit(text_file, on_progress=progress.append, by_hash=False)
        elapsed = time.monotonic() - started
    assert job.id == JOB_ID
    assert 2.0 <= elapsed < 4.0
    assert len(script.requests) == 3
    assert len({r.headers["Idempotency-Key"] for r in script.requests}) == 1
    assert script.bodies[0] == script.bodies[1] == script.bodies[2]
    assert script.bodies[0].count(text_file.read_bytes()) == 1
    assert progress == [size, 0, size, 0, size]


def test_an_upload_still_in_progress_409_or_a_short_disk_507_is_waited_out(text_file: Path) -> None:
    """The server's answers for "the same upload is still arriving" and "no disk space for now"
    carry Retry-After; an upload (with its Idempotency-Key) waits them out."""
    script = Script(
        problem(409, "still in progress", **{"Retry-After": "0"}),
        problem(507, "disk short", **{"Retry-After": "0"}),
        accepted(),
    )
    with fast_client(script) as client:
        assert client.submit(text_file, by_hash=False).id == JOB_ID
    assert len(script.requests) == 3
    assert len({r.headers["Idempotency-Key"] for r in script.requests}) == 1


def test_a_409_without_retry_after_or_on_another_request_is_not_retried(text_file: Path) -> None:
    script = Script(problem(409, "the job is already succeeded", **{"Retry-After": "0"}))
    with fast_client(script) as client, pytest.raises(Conflict):
        client.cancel(JOB_ID)  # no Idempotency-Key: a 409 here is final
    assert len(script.requests) == 1
    final = Script(problem(409, "a different conflict"))
    with fast_client(final) as client, pytest.raises(Conflict):
        client.submit(text_file, by_hash=False)
    assert len(final.requests) == 1


def test_429_with_an_http_date_is_honoured() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    script = Script(problem(429, "slow down", **{"Retry-After": when}), httpx.Response(200, json=job_body()))
    with fast_client(script) as client:
        started = time.monotonic()
        assert client.get(JOB_ID).id == JOB_ID
    assert time.monotonic() - started < 2.5
    assert len(script.requests) == 2


def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    script = Script(problem(429, "come back in an hour", **{"Retry-After": "3600"}))
    with fast_client(script) as client, pytest.raises(TooManyRequests) as info:
        client.get(JOB_ID)
    assert info.value.retry_after == 3600.0
    assert info.value.detail == "come back in an hour"
    assert len(script.requests) == 1


def test_retries_run_out_into_the_error(text_file: Path) -> None:
    script = Script(unavailable())
    with fast_client(script, retries=2) as client, pytest.raises(ServiceUnavailable) as info:
        client.submit(text_file, by_hash=False)
    assert len(script.requests) == 3
    assert info.value.status == 503
    assert info.value.detail == "busy"
    assert isinstance(info.value, ServerError)


@pytest.mark.parametrize(
    ("status", "error"), [(400, BadRequest), (422, Unprocessable), (500, ServerError), (502, ServerError)]
)
def test_other_errors_are_not_retried(text_file: Path, status: int, error: type[Exception]) -> None:
    script = Script(problem(status))
    with fast_client(script) as client:
        with pytest.raises(error):
            client.submit(text_file, by_hash=False)
        with pytest.raises(error):
            client.get(JOB_ID)
    assert len(script.requests) == 2


# ---- connection failures --------------------------------------------------------------------------


def test_a_connection_error_then_success(text_file: Path) -> None:
    script = Script(httpx.ConnectError("refused"), accepted())
    with fast_client(script) as client:
        assert client.submit(text_file, by_hash=False).id == JOB_ID
        assert len(script.requests) == 2
    script = Script(httpx.ReadError("reset"), httpx.Response(200, json=job_body()))
    with fast_client(script) as client:
        assert client.get(JOB_ID).id == JOB_ID  # a GET is safe to repeat after any failure
    assert len(script.requests) == 2


def test_on_retry_hears_of_each_retry_before_its_wait(text_file: Path) -> None:
    heard: list[Retrying] = []
    script = Script(httpx.ConnectError("refused"), unavailable("0"), accepted())
    with fast_client(script, on_retry=heard.append) as client:
        assert client.submit(text_file, by_hash=False).id == JOB_ID
    assert [(r.retry, r.retries, r.reason) for r in heard] == [(1, 5, "ConnectError: refused"), (2, 5, "503")]
    assert heard[0].request == "POST http://filejobs.test/v1/jobs"
    assert heard[1].delay == 0.0


def test_cancel_is_repeated_only_when_it_never_left() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.Response(200, json=job_body(status="cancelled")))
    with fast_client(script) as client:
        assert client.cancel(JOB_ID).status == "cancelled"
    assert len(script.requests) == 2

    script = Script(httpx.ReadError("connection reset"))
    with fast_client(script) as client, pytest.raises(TransportError) as info:
        client.cancel(JOB_ID)
    assert len(script.requests) == 1
    assert info.value.attempts == 1
    assert isinstance(info.value.__cause__, httpx.ReadError)


def test_nobody_listening_is_a_transport_error_after_the_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, retries=2, backoff=0.0) as client, pytest.raises(TransportError) as info:
        client.processors()
    assert info.value.attempts == 3
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_a_stream_that_cannot_seek_is_sent_once_and_chunked() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"from a pipe\n")
    os.close(write_end)
    script = Script(unavailable("0"))
    with fast_client(script) as client, open(read_end, "rb") as pipe, pytest.raises(ServiceUnavailable):
        client.submit(pipe, filename="piped.txt")
    assert len(script.requests) == 1
    request = script.requests[0]
    assert "Content-Length" not in request.headers
    assert request.headers["Transfer-Encoding"] == "chunked"
    assert b"from a pipe\n" in script.bodies[0]
    assert b'filename="piped.txt"' in script.bodies[0]


# ---- wait() never spins -------------------------------------------------------------------------


def test_wait_pauses_when_the_server_ignores_the_long_poll() -> None:
    running = httpx.Response(200, json=job_body(status="running"), headers={"ETag": '"x.2"'})
    script = Script(running)
    with fast_client(script) as client:
        started = time.monotonic()
        with pytest.raises(WaitTimeout, match=r"did not finish within 2\.5 s"):
            client.wait(JOB_ID, timeout=2.5)
    assert 2.4 <= time.monotonic() - started < 4.0
    assert 3 <= len(script.requests) <= 5  # about one a second, not thousands


# ---- the async client shares the policy -----------------------------------------------------


def test_async_retries_on_503_and_connection_errors(text_file: Path) -> None:
    script = Script(unavailable("1"), httpx.ConnectError("refused"), unavailable("1"), accepted())
    progress: list[int] = []

    async def main() -> float:
        async with AsyncClient(
            "http://filejobs.test", transport=script.async_transport(), backoff=0.0
        ) as client:
            started = time.monotonic()
            await client.submit(
                io.BytesIO(b"in memory\n"), filename="m.txt", on_progress=progress.append, by_hash=False
            )
            return time.monotonic() - started

    elapsed = anyio.run(main)
    assert 2.0 <= elapsed < 4.0
    assert len(script.requests) == 4
    assert len({r.headers["Idempotency-Key"] for r in script.requests}) == 1
    assert progress == [10, 0, 10, 0, 10, 0, 10]
    assert len(set(script.bodies)) == 1
