"""The status poll's fast path (filejobs.api.fast_status) answers exactly what the route does.

A plain ``GET /v1/jobs/{id}`` is answered by the fast path; the same request with ``?wait=0`` goes
through FastAPI's route (any query string does) and answers the same job the same way, so the two
can be compared byte for byte: status, every header in order, body.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from filejobs.api import fast_status
from filejobs.api.fast_status import ANSWERS_KEPT, LONGEST_KEPT, KeptAnswers
from filejobs.jobs.worker import LocalWorker
from filejobs.models import Job, job_public
from filejobs.testing import submit


def raw(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, list(response.headers.raw), response.content


def both(client: TestClient, job_id: str, **headers: str) -> tuple[Any, Any]:
    """The fast path's answer and the route's to the same poll."""
    fast = client.get(f"/v1/jobs/{job_id}", headers=headers)
    route = client.get(f"/v1/jobs/{job_id}?wait=0", headers=headers)
    return raw(fast), raw(route)


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs the fast path rendered (the route renders through its own import)."""
    rendered: list[str] = []

    def counting(job: Job) -> Any:
        rendered.append(job.id)
        return job_public(job)

    monkeypatch.setattr(fast_status, "job_public", counting)
    return rendered


def test_the_fast_path_answers_the_routes_bytes(
    client: TestClient, worker: LocalWorker, renders: list[str]
) -> None:
    job_id = submit(client, content=b"a,b\n1,2\n", name="t\u00e9st.csv")["id"]
    fast, route = both(client, job_id)
    assert fast == route
    assert fast[0] == 200
    assert [name for name, _ in fast[1]] == [
        b"etag", b"content-length", b"content-type",
        b"x-content-type-options", b"x-frame-options", b"content-security-policy",
    ]  # fmt: skip
    assert renders == [job_id]  # the fast path answered (and rendered once)

    etag = dict(fast[1])[b"etag"].decode()
    # RFC 9110 §13.1.2: "*" matches any current representation; tags are compared weakly.
    matching = (etag, f'"other", {etag}', f"  {etag}  ,x", "*", f"W/{etag}", f'W/"other", W/{etag}')
    for if_none_match in matching:
        fast, route = both(client, job_id, **{"If-None-Match": if_none_match})
        assert fast == route
        assert fast[0] == 304
        assert fast[2] == b""
    for other in ('"other"', 'W/"other"', etag.strip('"'), f"W/{etag}x"):
        fast, route = both(client, job_id, **{"If-None-Match": other})
        assert fast == route
        assert fast[0] == 200

    worker.drain()  # the job runs: a new version, a new body
    fast, route = both(client, job_id, **{"If-None-Match": etag})
    assert fast == route
    assert fast[0] == 200
    assert dict(fast[1])[b"etag"].decode() != etag
    assert b'"status":"succeeded"' in fast[2]
    assert renders == [job_id, job_id]


def test_a_kept_answer_is_reused_until_the_job_changes(
    client: TestClient, worker: LocalWorker, renders: list[str]
) -> None:
    job_id = submit(client)["id"]
    first = [raw(client.get(f"/v1/jobs/{job_id}")) for _ in range(5)]
    assert all(answer == first[0] for answer in first)
    assert renders == [job_id]  # rendered once, then the kept answer
    worker.drain()
    after = raw(client.get(f"/v1/jobs/{job_id}"))
    assert after[2] != first[0][2]
    assert after == raw(client.get(f"/v1/jobs/{job_id}?wait=0"))
    assert renders == [job_id, job_id]


def test_callers_with_a_key_and_unknown_jobs_go_to_the_route(client: TestClient, renders: list[str]) -> None:
    job_id = submit(client)["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer nope"}).status_code == 401
    missing = client.get(f"/v1/jobs/{job_id[:-8]}00000000")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert renders == []


def answer(size: int) -> tuple[fast_status.Headers, bytes]:
    return (), b"x" * size


def test_kept_answers_are_bounded_in_count_and_bytes() -> None:
    kept = KeptAnswers(entries=3, body_bytes=1000)
    for n in range(5):
        kept.put(f"e{n}", answer(10))
    assert len(kept) == 3
    assert kept.get("e0") is None
    assert kept.get("e1") is None
    assert kept.get("e2") is not None  # now the most recently used
    kept.put("e5", answer(10))
    assert kept.get("e3") is None  # the least recently used went
    assert kept.get("e2") is not None
    kept.put("big", answer(600))
    kept.put("bigger", answer(600))  # together over the bytes: the older goes
    assert kept.get("big") is None
    assert kept.get("bigger") is not None
    kept.put("huge", answer(1001))  # over the bytes alone: never kept
    assert kept.get("huge") is None


def test_the_default_bounds_keep_no_long_body() -> None:
    kept = KeptAnswers()
    kept.put("long", answer(LONGEST_KEPT + 1))
    assert kept.get("long") is None
    for n in range(ANSWERS_KEPT + 10):
        kept.put(str(n), answer(1))
    assert len(kept) == ANSWERS_KEPT


def test_a_failing_fast_path_leaves_the_poll_to_the_route(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path answers before Starlette's error middleware: when it fails, nothing has been
    sent, and the route answers the poll (here: correctly, as only the fast path's render fails)."""
    job_id = submit(client)["id"]

    def broken(job: Job) -> Any:
        raise RuntimeError("a bug in the fast path")

    monkeypatch.setattr(fast_status, "job_public", broken)
    fast, route = both(client, job_id)
    assert fast == route
    assert fast[0] == 200
