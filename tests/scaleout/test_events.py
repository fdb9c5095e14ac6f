"""Event streams with the Celery backend: the job runs in a Celery worker process (another
process, PostgreSQL, a broker), and the API's stream follows it live through NOTIFY."""

from __future__ import annotations

import httpx
import pytest

from filejobs.testing import Cluster, submit
from tests.events.sse import EventStream


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_a_celery_job_is_followed_live_to_succeeded(cluster: Cluster) -> None:
    worker = cluster.worker(1)
    api = cluster.api()
    worker.wait_ready()
    with api.client() as client, client.stream("GET", "/v1/events", timeout=httpx.Timeout(30.0)) as response:
        events = EventStream(response)
        job = submit(client, processor="sleep", params={"seconds": 1.5, "steps": 3})
        with client.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=httpx.Timeout(30.0)) as one:
            followed = [event.json() for event in EventStream(one).rest()]  # ends after the last
        seen = []
        while not seen or seen[-1]["status"] != "succeeded":
            event = events.event()
            if event.json()["id"] == job["id"]:
                seen.append(event.json())
    for changes in (followed, seen):
        versions = [change["version"] for change in changes]
        assert versions == sorted(set(versions)), versions
        assert changes[-1]["status"] == "succeeded"
    assert any(change["status"] == "running" and 0 < change["progress"] < 1 for change in followed), followed
