"""``submit_upload`` called as the domain function it is: no HTTP, a replay is a value."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import pytest
from fastapi.testclient import TestClient

from filejobs.errors import Unprocessable
from filejobs.jobs.intake import Submitted, submit_upload
from filejobs.services import Services

BOUNDARY = "intake-test-boundary"
HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


async def body(content: bytes) -> AsyncIterator[bytes]:
    yield (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def submit(client: TestClient, services: Services, content: bytes, key: str | None) -> Submitted:
    upload = partial(
        submit_upload, services=services, owner="", headers=HEADERS, body=body(content), idempotency_key=key
    )
    assert client.portal is not None
    return client.portal.call(upload)


def test_a_new_upload_is_a_new_job(client: TestClient, services: Services) -> None:
    submitted = submit(client, services, b"hello\n", None)

    assert not submitted.replayed
    assert (submitted.job.status, submitted.job.file_size) == ("queued", 6)


def test_the_same_request_again_is_a_replay_of_its_job(client: TestClient, services: Services) -> None:
    first = submit(client, services, b"hello\n", "key-1")
    again = submit(client, services, b"hello\n", "key-1")

    assert not first.replayed
    assert again.replayed
    assert again.job.id == first.job.id


def test_another_request_under_the_same_key_is_422(client: TestClient, services: Services) -> None:
    submit(client, services, b"hello\n", "key-1")

    with pytest.raises(Unprocessable):
        submit(client, services, b"something else\n", "key-1")


def test_a_finished_key_is_found_without_the_write_lock_until_it_expires(
    client: TestClient, services: Services
) -> None:
    from datetime import timedelta

    from filejobs.jobs import idempotency
    from filejobs.models import utcnow

    made = submit(client, services, b"read first\n", "read-first")
    found = idempotency.find_done(services.db, scope="", key="read-first")
    assert found is not None
    assert found.job_id == made.job.id
    assert idempotency.find_done(services.db, scope="", key="never-used") is None
    assert idempotency.find_done(services.db, scope="other-key", key="read-first") is None
    later = utcnow() + services.settings.idempotency_ttl + timedelta(seconds=1)
    assert idempotency.find_done(services.db, scope="", key="read-first", now=later) is None
