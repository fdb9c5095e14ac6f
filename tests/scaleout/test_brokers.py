"""The broker goes away and comes back: uploads answered 202 while it is down still run once it is
back, and a message the broker lost with a restart is published again by the sweeper.

These tests run a broker of their own (a private ``redis-server`` without persistence, or a
private RabbitMQ node), never the machine's, so they can stop and start it freely.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
import redis

from filejobs.testing import Cluster, Server, submit, wait_until
from filejobs.testing.brokers import PrivateBroker, PrivateRabbitMQ
from tests.scaleout.conftest import Record

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e]

ClusterFactory = Callable[[str], Cluster]

#: The sweeper every 0.5 s; a queued job whose message is over 1 s old may have been lost. (The
#: lease stays at its default: nothing here is killed, and a job must never look lost while its
#: processor process starts.)
FAST = {"sweep_interval": 0.5, "redispatch_after": 1}
#: An upload while the broker is down must still be answered at once (the publish happens after
#: the response, and its failure only leaves the row for the sweeper).
QUICK_UPLOAD = 5.0


def upload_while_down(client: httpx.Client, cluster: Cluster) -> tuple[str, float]:
    """Upload with the broker down: 202 quickly, the row queued and never dispatched."""
    started = time.monotonic()
    job = submit(client, b"uploaded while the broker was down\n", name="down.txt")
    took = time.monotonic() - started
    assert took < QUICK_UPLOAD, f"the upload took {took:.2f} s with the broker down"
    row = cluster.job(job["id"])
    assert row.status == "queued", row
    return job["id"], took


def assert_not_ready(server: Server) -> None:
    """``/readyz`` says 503 with the broker check failed (and the others fine)."""
    with server.client() as client:
        response = client.get("/readyz")
    assert response.status_code == 503, response.text
    checks = response.json()["checks"]
    assert checks["broker"].startswith("failed"), checks
    assert checks["database"] == "ok", checks
    assert checks["storage"] == "ok", checks


def assert_ready(server: Server) -> None:
    with server.client() as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["broker"] == "ok"


def wait_never_dispatched(cluster: Cluster, job_id: str) -> None:
    """The publish that followed the 202 has failed (it runs after the response): the row is still
    queued with no ``dispatched_at``. Polled, since the publish is retried for a moment."""

    def failed() -> bool:
        return f"job {job_id}: broker did not take the message" in "\n".join(
            server.log_text() for server in cluster.servers
        )

    wait_until(failed, timeout=30, what=f"the API to give up publishing job {job_id}")
    row = cluster.job(job_id)
    assert row.status == "queued", row
    assert row.dispatched_at is None, row


def assert_ran_once(cluster: Cluster, job_ids: list[str], timeout: float) -> None:
    """Every job ends succeeded at its first attempt, run by exactly one worker."""
    rows = cluster.wait_jobs(job_ids, timeout=timeout)
    assert {i: (j.status, j.attempts) for i, j in rows.items()} == {i: ("succeeded", 1) for i in job_ids}
    assert cluster.runs_per_job() == Counter(job_ids)


# ---- Redis ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("private_broker", ["redis"], indirect=True, ids=["redis"])
def test_broker_down_during_upload_then_back(
    private_broker: PrivateBroker, make_cluster: ClusterFactory, record: Record
) -> None:
    cluster = make_cluster(private_broker.url)
    worker = cluster.worker(1, **FAST)
    api = cluster.api(**FAST)
    worker.wait_ready()
    assert_ready(api)

    private_broker.stop()
    with api.client() as client:
        job_id, upload_took = upload_while_down(client, cluster)
    wait_never_dispatched(cluster, job_id)
    assert_not_ready(api)

    private_broker.start()
    back = time.monotonic()
    assert_ran_once(cluster, [job_id], timeout=60)
    recovered = time.monotonic() - back
    record("upload_seconds", upload_took)
    record("recovery_seconds", recovered)
    assert_ready(api)
    assert worker.returncode is None


@pytest.mark.parametrize("private_broker", ["redis"], indirect=True, ids=["redis"])
def test_broker_restart_loses_published_message(
    private_broker: PrivateBroker, make_cluster: ClusterFactory, record: Record
) -> None:
    cluster = make_cluster(private_broker.url)
    api = cluster.api(**FAST)  # no worker yet: the message waits in Redis
    broker = redis.Redis.from_url(private_broker.url)
    try:
        with api.client() as client:
            job_id = submit(client)["id"]
        wait_until(lambda: cluster.job(job_id).dispatched_at is not None, timeout=20, what="the publish")
        published_at = cluster.job(job_id).dispatched_at
        # One message, or two: a sweep that ran before the API's own publish had recorded itself
        # (a loaded machine) publishes the job too; duplicates are harmless (the claim is conditional).
        assert broker.llen(cluster.queue) in (1, 2), "the message is not in Redis"
        original = task_ids(broker, cluster.queue)

        private_broker.stop()
        private_broker.start()  # no persistence: the message is gone
        restarted = time.monotonic()
        # Only copies the sweeper published since can be there (it may already have).
        assert not original & task_ids(broker, cluster.queue), "the message survived the restart"
        assert cluster.job(job_id).status == "queued"

        worker = cluster.started_worker(1, **FAST)
        assert_ran_once(cluster, [job_id], timeout=60)
        recovered = time.monotonic() - restarted
    finally:
        broker.close()
    final = cluster.job(job_id)
    assert final.dispatched_at is not None
    assert published_at is not None
    assert final.dispatched_at > published_at, "the sweeper did not publish the job again"
    record("recovery_seconds", recovered)
    assert worker.returncode is None


def task_ids(broker: redis.Redis, queue: str) -> set[str]:
    """The Celery task ids of the messages waiting in ``queue``."""
    ids = set()
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        ids.add(message["headers"]["id"])
    return ids


# ---- RabbitMQ -------------------------------------------------------------------------------------


def amqp_ready_messages(url: str, queue: str) -> int:
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)


@pytest.mark.parametrize("private_broker", ["amqp"], indirect=True, ids=["amqp"])
def test_broker_restart_around_upload(
    private_broker: PrivateBroker, make_cluster: ClusterFactory, record: Record
) -> None:
    assert isinstance(private_broker, PrivateRabbitMQ)
    cluster = make_cluster(private_broker.url)
    worker = cluster.worker(1, **FAST)
    api = cluster.api(**FAST)
    worker.wait_ready()
    assert_ready(api)

    # 1. RabbitMQ down while a file is uploaded: 202, and the job runs once it is back.
    stop_took = private_broker.stop()
    with api.client() as client:
        down_id, upload_took = upload_while_down(client, cluster)
    wait_never_dispatched(cluster, down_id)
    assert_not_ready(api)
    start_took = private_broker.start()
    back = time.monotonic()
    assert_ran_once(cluster, [down_id], timeout=60)
    recovered = time.monotonic() - back
    assert_ready(api)

    # 2. A message published while no worker runs survives a restart (durable queue, persistent
    #    message, publisher confirms). The API is stopped first, so its sweeper cannot publish a
    #    copy: what the worker finds afterwards is the original message.
    worker.terminate()
    assert worker.wait(30) == 0
    with api.client() as client:
        kept_id = submit(client, b"published before the restart\n", name="kept.txt")["id"]
    wait_until(lambda: cluster.job(kept_id).dispatched_at is not None, timeout=20, what="the publish")
    api.terminate()
    assert api.wait(30) == 0
    # Read once the API is gone, so no publish can still be recording itself.
    published_at = cluster.job(kept_id).dispatched_at
    # One message, or two: a sweep that ran before the API's own publish had recorded itself
    # (a loaded machine) publishes the job too; duplicates are harmless (the claim is conditional).
    waiting = amqp_ready_messages(private_broker.url, cluster.queue)
    assert waiting in (1, 2), "the message is not in RabbitMQ"
    private_broker.stop()
    private_broker.start()
    assert amqp_ready_messages(private_broker.url, cluster.queue) == waiting, "the restart lost a message"
    cluster.started_worker(1, **FAST)
    assert_ran_once(cluster, [down_id, kept_id], timeout=60)
    assert cluster.job(kept_id).dispatched_at == published_at, "the message was published again"

    for name, value in {
        "stop_app_seconds": stop_took,
        "start_app_seconds": start_took,
        "upload_seconds": upload_took,
        "recovery_seconds": recovered,
    }.items():
        record(name, value)
