"""``callback_url`` from the clients and the CLI, against a real server: each upload path (multipart,
by hash, many by hash, tus) carries it, the delivery is signed with the key's default secret, the
derived Idempotency-Key tells two callback URLs apart, and tus refuses a bad one at creation."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from filejobs.client import AsyncClient, ByHash, Client, Job, idempotency_key
from filejobs.testing import Server
from filejobs.testing.webhooks import Receiver
from tests.cli.helpers import run_cli
from tests.client.conftest import running_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_server(
        tmp_path_factory.mktemp("server"),
        reuse="true",
        webhook_allow_http="true",
        webhook_allow_private="true",
        webhook_poll_interval="0.1",
        webhook_retry_schedule="0.1,0.1",
    )


@pytest.fixture(scope="module")
def secret(server: Server) -> str:
    with Client(server.base_url) as client:
        return client.rotate_default_secret().secret


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def delivered_to(receiver: Receiver, secret: str, job_id: str) -> str:
    """The path the final status of ``job_id`` was posted to (verified against ``secret``)."""
    got = receiver.wait_for(lambda got: any(job_id in r.body.decode() for r in got))
    [request] = [r for r in got if job_id in r.body.decode()]
    event = request.verify(secret)
    assert isinstance(event, dict)
    assert event["type"] == "job.succeeded"
    assert event["data"]["id"] == job_id
    return request.path


def test_submit_sends_the_callback_url_and_the_delivery_is_signed(
    server: Server, secret: str, receiver: Receiver, tmp_path: Path
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"callback from the sync client\n")
    with Client(server.base_url) as client:
        job = client.submit(path, processor="upper", callback_url=receiver.url + "?sync", by_hash=False)
        assert delivered_to(receiver, secret, job.id) == "/hook?sync"
        # the same file and options with another callback: another derived key, so another job
        other = client.submit(path, processor="upper", callback_url=receiver.url + "?other", reuse=False)
        assert other.id != job.id
        assert delivered_to(receiver, secret, other.id) == "/hook?other"


def test_the_derived_key_counts_the_callback_url_only_when_given() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    plain = idempotency_key(sha, 1, "upper", None, name="x")
    assert idempotency_key(sha, 1, "upper", None, name="x", callback_url=None) == plain
    with_a = idempotency_key(sha, 1, "upper", None, name="x", callback_url="https://a.example/")
    with_b = idempotency_key(sha, 1, "upper", None, name="x", callback_url="https://b.example/")
    assert len({plain, with_a, with_b}) == 3


def test_by_hash_and_many_by_hash_carry_it(
    server: Server, secret: str, receiver: Receiver, tmp_path: Path
) -> None:
    content = b"stored for the by-hash callbacks\n"
    path = tmp_path / "b.txt"
    path.write_bytes(content)
    with Client(server.base_url) as client:
        first = client.submit(path, processor="inspect", by_hash=False)
        client.wait(first.id, timeout=30)
        skipped: list[int] = []
        again = client.submit(
            path,
            processor="inspect",
            reuse=False,
            callback_url=receiver.url + "?one",
            on_skipped=skipped.append,
        )
        assert skipped == [len(content)]  # made by hash: no byte sent
        assert delivered_to(receiver, secret, again.id) == "/hook?one"
        sha = hashlib.sha256(content).hexdigest()
        [many] = client.submit_many_by_hash(
            [
                ByHash(
                    sha,
                    len(content),
                    "b.txt",
                    processor="inspect",
                    reuse=False,
                    callback_url=receiver.url + "?many",
                )
            ]
        )
        assert isinstance(many, Job)
        assert delivered_to(receiver, secret, many.id) == "/hook?many"


@pytest.mark.anyio
async def test_a_resumable_upload_carries_it(
    server: Server, secret: str, receiver: Receiver, tmp_path: Path
) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"sent with tus\n" * 100)
    async with AsyncClient(server.base_url) as client:
        job = await client.submit(
            path, processor="upper", resumable="always", callback_url=receiver.url + "?tus", by_hash=False
        )
    assert delivered_to(receiver, secret, job.id) == "/hook?tus"


def test_tus_refuses_a_bad_callback_url_at_creation(server: Server) -> None:
    # (tests.tus.helpers.metadata spells keys with hyphens, as idempotency-key: not this one's)
    def metadata(url: str) -> str:
        return (
            "filename "
            + base64.b64encode(b"d.txt").decode()
            + ",callback_url "
            + base64.b64encode(url.encode()).decode()
        )

    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "10"}
    for url in ("nonsense", "ftp://example.com/x"):
        response = httpx.post(
            server.base_url + "/v1/uploads", headers={**headers, "Upload-Metadata": metadata(url)}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "callback_url" in response.json()["detail"]


def test_the_cli_passes_callback_url(server: Server, secret: str, receiver: Receiver, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "e.txt").write_bytes(b"sent by the CLI with a callback\n")
    result = run_cli(
        "submit", src, "--server", server.base_url, "--processor", "upper", "--wait",
        "--callback-url", receiver.url + "?cli", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with Client(server.base_url) as client:
        [job] = [j for j in client.list() if j.file.name == "e.txt"]
    assert delivered_to(receiver, secret, job.id) == "/hook?cli"
