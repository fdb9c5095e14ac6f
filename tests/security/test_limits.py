"""Backpressure: per-key rate limit and unfinished-jobs limit (429), queue depth (503), free disk
(507), each with ``Retry-After``, and each on an upload before any byte of it is read or stored.

"Before the body is read" is checked with :func:`~tests.security.helpers.asgi_call`, which hands
the app a several-MiB body one chunk at a time and counts the chunks the app asked for, and once
over a real socket against a real server that gets only the request head. Clocks that matter
(the token bucket, the queue-depth cache) are moved by hand.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.app import create_app
from filejobs.jobs import backpressure, repository
from filejobs.jobs.backpressure import Admission
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.services import Services
from filejobs.testing import Server, bearer, post_file, submit
from tests.conftest import burst_worker, make_settings
from tests.jobs.helpers import row
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.security.helpers import (
    Clock,
    StreamedBody,
    asgi_call,
    assert_nothing_stored,
    assert_problem,
    retry_after,
    stored_files,
)

BIG = 8 * 1024 * 1024


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock of the rate limiter and the queue-depth cache, moved only by the test."""
    fake = Clock()
    monkeypatch.setattr(backpressure, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


@pytest.fixture
def open_app(data_dir: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """An app (open until a test makes a key) with the settings given by ``@limited(...)``."""
    overrides = getattr(request, "param", {})
    app = create_app(make_settings(data_dir, **overrides), dispatcher=InMemoryDispatcher())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def limited(**overrides: object) -> pytest.MarkDecorator:
    label = ",".join(f"{k}={v}" for k, v in overrides.items())
    return pytest.mark.parametrize("open_app", [overrides], indirect=True, ids=[label])


def services_of(client: TestClient) -> Services:
    services: Services = client.app_state["services"]
    return services


def refused_before_the_body(
    client: TestClient, status: int, headers: dict[str, str] | None = None
) -> StreamedBody:
    """POST a BIG upload chunk by chunk: it must be refused with ``status`` having read none."""
    body = StreamedBody(size=BIG)
    answer = asgi_call(client, "POST", "/v1/jobs", body, headers=headers)
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) >= 1
    assert body.chunks_read == 0
    return body


# ---- the per-key rate limit -----------------------------------------------------------------


@limited(rate_limit=1, rate_burst=3)
def test_a_key_over_its_rate_gets_429_and_others_do_not(open_app: TestClient, clock: Clock) -> None:
    services = services_of(open_app)
    alice = keys.create_key(services.db, "alice")[1]
    bob = keys.create_key(services.db, "bob")[1]

    for _ in range(3):  # the burst
        assert open_app.get("/v1/jobs", headers=bearer(alice)).status_code == 200
    refused = open_app.get("/v1/jobs", headers=bearer(alice))

    body = assert_problem(refused, 429)
    assert retry_after(refused) >= 1
    assert "Rate limit" in body["detail"]
    for _ in range(3):
        assert open_app.get("/v1/jobs", headers=bearer(bob)).status_code == 200  # a bucket of its own
    refused_before_the_body(open_app, 429, bearer(alice))  # uploads too, before their body
    assert_nothing_stored(services, uploads=0, jobs=0)

    clock.advance(1.0)  # one token back at 1 request/s
    assert open_app.get("/v1/jobs", headers=bearer(alice)).status_code == 200
    assert open_app.get("/v1/jobs", headers=bearer(alice)).status_code == 429
    clock.advance(60)  # never more than the burst
    assert [open_app.get("/v1/processors", headers=bearer(alice)).status_code for _ in range(4)] == [
        200,
        200,
        200,
        429,
    ]


@limited(rate_limit=1, rate_burst=1)
def test_anonymous_callers_of_an_open_service_are_not_rate_limited(
    open_app: TestClient, clock: Clock
) -> None:
    """The limit is per API key: without keys there is no one to limit (by design; a proxy in
    front of an open service does that)."""
    assert [open_app.get("/v1/jobs").status_code for _ in range(20)] == [200] * 20


# ---- unfinished jobs per key ----------------------------------------------------------------


@limited(max_unfinished_jobs=2)
def test_a_key_with_too_many_unfinished_jobs_gets_429_until_one_finishes(open_app: TestClient) -> None:
    services = services_of(open_app)
    alice = keys.create_key(services.db, "alice")[1]
    bob = keys.create_key(services.db, "bob")[1]
    submit(open_app, b"first\n", key=alice)["id"]  # two contents: one key's same bytes are stored once
    submit(open_app, b"second\n", key=alice)["id"]

    refused = post_file(open_app, b"one too many\n", key=alice)

    body = assert_problem(refused, 429)
    assert retry_after(refused) >= 1
    assert "unfinished" in body["detail"]
    assert_nothing_stored(services, uploads=2, jobs=2)
    refused_before_the_body(open_app, 429, bearer(alice))
    assert_nothing_stored(services, uploads=2, jobs=2)
    submit(open_app, key=bob)["id"]  # Bob's count is his own

    assert burst_worker(services).drain() == 3

    submit(open_app, key=alice)["id"]


@limited(max_unfinished_jobs=2)
def test_a_cancelled_job_no_longer_counts(open_app: TestClient) -> None:
    first = submit(open_app)["id"]
    submit(open_app)["id"]
    assert_problem(post_file(open_app), 429)

    assert open_app.post(f"/v1/jobs/{first}/cancel").status_code == 200

    submit(open_app)["id"]


@limited(max_unfinished_jobs=2)
def test_retry_is_refused_at_the_unfinished_limit(open_app: TestClient) -> None:
    services = services_of(open_app)
    alice = keys.create_key(services.db, "alice")[1]
    bob = keys.create_key(services.db, "bob")[1]
    failed = [submit(open_app, key=alice, processor="fail")["id"] for _ in range(2)]
    assert burst_worker(services).drain() == 2
    submit(open_app, key=alice)["id"]
    submit(open_app, key=alice)["id"]

    refused = open_app.post(f"/v1/jobs/{failed[0]}/retry", headers=bearer(alice))

    assert_problem(refused, 429)
    assert retry_after(refused) >= 1
    assert row(services.db, failed[0]).status == "failed"
    # Another key learns nothing from the limit: the job is not its own, so 404 first.
    assert_problem(open_app.post(f"/v1/jobs/{failed[0]}/retry", headers=bearer(bob)), 404)


@limited(max_unfinished_jobs=1)
def test_a_replay_is_answered_at_the_unfinished_limit(open_app: TestClient) -> None:
    """Replaying a request makes no job, so the limit does not stand in its way."""
    job_id = submit(open_app, idempotency_key="same")["id"]
    assert_problem(post_file(open_app, b"new\n"), 429)

    again = post_file(open_app, idempotency_key="same")

    assert again.status_code == 200, again.text
    assert again.json()["id"] == job_id


# ---- queue depth ----------------------------------------------------------------------------


@limited(max_queue_depth=2)
def test_a_deep_queue_gets_503_until_it_drains(open_app: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Admission, "TTL", 0)  # read the queue and the disk on every upload
    services = services_of(open_app)
    alice = keys.create_key(services.db, "alice")[1]
    bob = keys.create_key(services.db, "bob")[1]
    submit(open_app, key=bob)["id"]
    submit(open_app, key=alice)["id"]

    refused = post_file(open_app, b"one too many\n", key=alice)

    body = assert_problem(refused, 503)
    assert retry_after(refused) >= 1
    assert "queue" in body["detail"]
    assert_nothing_stored(services, uploads=2, jobs=2)
    refused_before_the_body(open_app, 503, bearer(bob))  # anyone's upload: the queue is shared
    assert_nothing_stored(services, uploads=2, jobs=2)
    assert open_app.get("/v1/jobs", headers=bearer(alice)).status_code == 200  # reads still work

    assert burst_worker(services).drain() == 2

    submit(open_app, key=alice)["id"]


def counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the COUNT queries the admission checks make."""
    calls = {"queued": 0, "unfinished": 0}
    count_queued, count_unfinished = repository.count_queued, repository.count_unfinished

    def queued(db: Any) -> int:
        calls["queued"] += 1
        return count_queued(db)

    def unfinished(db: Any, owner: str) -> int:
        calls["unfinished"] += 1
        return count_unfinished(db, owner)

    monkeypatch.setattr(repository, "count_queued", queued)
    monkeypatch.setattr(repository, "count_unfinished", unfinished)
    return calls


@limited(max_queue_depth=1000, max_unfinished_jobs=1000)
def test_far_from_the_limits_the_counts_are_read_at_most_once_a_second(
    open_app: TestClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting(monkeypatch)
    for _ in range(4):
        submit(open_app)["id"]
    assert calls == {"queued": 1, "unfinished": 1}
    clock.advance(1.0)
    submit(open_app)["id"]
    assert calls == {"queued": 2, "unfinished": 2}


@limited(max_queue_depth=2)
def test_near_the_queue_limit_the_depth_is_counted_on_every_upload(
    open_app: TestClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting(monkeypatch)
    submit(open_app)["id"]  # depth read: 0
    submit(open_app)["id"]  # 1 is within 5 % of 2: read again, exactly
    assert_problem(post_file(open_app), 503)  # no overshoot, although < 1 s passed
    assert calls["queued"] == 3


@limited(max_queue_depth=2, max_unfinished_jobs=0)
def test_retry_is_refused_when_the_queue_is_deep(
    open_app: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Admission, "TTL", 0)
    services = services_of(open_app)
    failed = submit(open_app, processor="fail")["id"]
    assert burst_worker(services).drain() == 1
    submit(open_app)["id"]
    submit(open_app)["id"]

    refused = open_app.post(f"/v1/jobs/{failed}/retry")

    assert_problem(refused, 503)
    assert retry_after(refused) >= 1
    assert row(services.db, failed).status == "failed"


# ---- free disk ------------------------------------------------------------------------------


@limited(min_free_disk=10**18)
def test_low_disk_gets_507_before_any_byte_is_stored(open_app: TestClient) -> None:
    services = services_of(open_app)

    refused = post_file(open_app)

    body = assert_problem(refused, 507)
    assert retry_after(refused) >= 1
    assert "disk" in body["detail"]
    assert_nothing_stored(services, uploads=0, jobs=0)
    refused_before_the_body(open_app, 507)
    assert_nothing_stored(services, uploads=0, jobs=0)
    assert open_app.get("/v1/jobs").status_code == 200  # only uploads are refused


@limited(min_free_disk=0, max_upload_bytes=10**18)
def test_an_upload_announced_larger_than_the_free_disk_gets_507(open_app: TestClient) -> None:
    services = services_of(open_app)
    free = shutil.disk_usage(services.settings.data_dir).free
    body = StreamedBody(size=BIG)

    answer = asgi_call(open_app, "POST", "/v1/jobs", body, headers={"content-length": str(free + BIG)})

    assert answer.status == 507, answer.body
    assert body.chunks_read == 0
    assert_nothing_stored(services, uploads=0, jobs=0)
    submit(open_app)["id"]  # an upload that fits is fine


@limited(min_free_disk=0, max_upload_bytes=BIG)
def test_an_upload_announced_over_the_size_limit_is_413_not_507(open_app: TestClient) -> None:
    """Larger than any file may be: that is the answer, whatever the disk (retrying cannot help)."""
    body = StreamedBody(size=BIG)

    answer = asgi_call(open_app, "POST", "/v1/jobs", body, headers={"content-length": str(10**17)})

    assert answer.status == 413, answer.body
    assert body.chunks_read == 0
    assert_nothing_stored(services_of(open_app), uploads=0, jobs=0)


def raw_head_only(port: int, head: bytes, timeout: float = 15.0) -> tuple[str, dict[str, str], bytes]:
    """Send only a request head (no body byte); the answer's status line, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed without an answer: {received!r}"
            received += chunk
        head_bytes, _, body = received.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        while len(body) < int(headers.get("content-length", "0")):
            chunk = sock.recv(65536)
            assert chunk, "the server closed in the middle of its answer"
            body += chunk
        return status_line, headers, body


@pytest.fixture
def low_disk_server(tmp_path: Path) -> Iterator[Server]:
    env = {
        "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS),
        "FILEJOBS_WORKERS": "1",
        "FILEJOBS_MIN_FREE_DISK": str(10**18),
    }
    with Server(tmp_path / "data", env=env, log_path=tmp_path / "server.log") as running:
        yield running
    print(f"----- server log (tail) -----\n{running.log_tail(60)}")


@pytest.mark.e2e
def test_a_real_server_answers_507_to_the_request_head_alone(low_disk_server: Server) -> None:
    head = (
        "POST /v1/jobs HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{low_disk_server.port}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {BIG}\r\n\r\n"
    ).encode()

    status_line, headers, body = raw_head_only(low_disk_server.port, head)  # the body never comes

    assert status_line.startswith("HTTP/1.1 507 "), (status_line, body)
    assert int(headers["retry-after"]) >= 1
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 507
    assert stored_files(low_disk_server.data_dir, "tmp") == []
    assert stored_files(low_disk_server.data_dir, "uploads") == []
