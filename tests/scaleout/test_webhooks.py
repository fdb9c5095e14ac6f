"""Webhooks with the Celery backend on PostgreSQL and Redis: a job a Celery worker runs writes its
delivery in the worker's transaction; the one API node holding the sweeper lock sends it, once,
woken by the jobs table's NOTIFY."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest

from filejobs.testing import Cluster, submit
from filejobs.testing.brokers import cleanup_redis_queue
from filejobs.testing.webhooks import Receiver
from tests.scaleout.conftest import ClusterFactory
from tests.services import require_port
from tests.webhooks.conftest import wait_until

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e]

REDIS = "redis://127.0.0.1:6379/0"
WEBHOOKS = {
    "webhook_allow_http": "true",
    "webhook_allow_private": "true",
    "webhook_timeout": "2",
    "webhook_poll_interval": "5",  # long: the NOTIFY must be what wakes the sender
}


@pytest.fixture
def redis_cluster(make_cluster: ClusterFactory, queue_name: str) -> Iterator[Cluster]:
    require_port("Redis", "127.0.0.1", 6379)
    cluster = make_cluster(REDIS)
    try:
        yield cluster
    finally:
        cluster.close()
        cleanup_redis_queue(REDIS, queue_name)


def test_a_job_run_by_a_celery_worker_is_delivered_once(redis_cluster: Cluster) -> None:
    with Receiver() as receiver:
        first, second = (
            redis_cluster.api(**WEBHOOKS),
            redis_cluster.api(**WEBHOOKS),
        )  # one sender between them
        redis_cluster.started_worker(**WEBHOOKS)
        with first.client() as client:
            hook = client.post("/v1/webhooks", json={"url": receiver.url})
            assert hook.status_code == 201, hook.text
            secret, webhook_id = hook.json()["secret"], hook.json()["id"]
        with second.client() as client:
            job_id = submit(client)["id"]
        [request] = receiver.wait_count(1, timeout=60)
        event = request.verify(secret)
        assert isinstance(event, dict)
        assert event["type"] == "job.succeeded"
        assert event["data"]["id"] == job_id
        delivered_at = request.at

        with first.client() as client:
            [delivery] = wait_until(
                lambda: (
                    (d := client.get(f"/v1/webhooks/{webhook_id}/deliveries").json()["items"])
                    and d[0]["status"] == "delivered"
                    and d
                ),
                timeout=30,
                what="the delivery recorded",
            )
            job = client.get(f"/v1/jobs/{job_id}").json()
        assert delivery["attempts"] == 1
        assert job["notification"] == "delivered"
        finished = job["finished_at"]
        assert json.loads(request.body)["data"]["finished_at"] == finished
        # woken by NOTIFY, not by its 5 s poll
        lag = delivered_at - datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp()
        assert lag < 3.0, lag
        # once the row says delivered no sender can claim it again: this one request is all
        assert len(receiver.requests) == 1
