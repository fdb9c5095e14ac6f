"""Bounded waits on real conditions (never sleep-and-hope): on anything (:func:`wait_until`), on a
job through the API's long-poll (:func:`wait_for`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
#: The statuses a job ends in.
TERMINAL = ("succeeded", "failed", "cancelled")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
    error: type[Exception] = AssertionError,
) -> T:
    """Poll ``predicate`` until it returns something truthy (and return that); raise ``error``
    after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def finished(job: Mapping[str, Any]) -> bool:
    """Whether a job body is in a terminal status."""
    return job["status"] in TERMINAL


def status_is(*statuses: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda job: job["status"] in statuses


def wait_for(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
) -> dict[str, Any]:
    """Long-poll ``GET /v1/jobs/{id}?wait=`` until ``until(job)`` holds; AssertionError after
    ``timeout`` s with the last state seen."""
    deadline = time.monotonic() + timeout
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    etag = response.headers["ETag"]
    while not until(job):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"job {job_id} did not get there within {timeout:g} s; last seen: {job}")
        response = client.get(
            f"/v1/jobs/{job_id}",
            params={"wait": min(10.0, max(0.1, remaining))},
            headers={"If-None-Match": etag},
        )
        if response.status_code == 304:
            continue
        assert response.status_code == 200, response.text
        job, etag = response.json(), response.headers["ETag"]
    return job
