"""Fixtures for the scale-out tests: a fresh PostgreSQL database, a broker (the machine's Redis or
RabbitMQ, or a private one the test can stop) with a queue of the test's own, and a
:class:`~filejobs.testing.Cluster` of API servers and Celery workers that is always killed
and whose logs are printed at teardown (pytest shows them for a failed test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from filejobs.testing import Cluster
from filejobs.testing.brokers import (
    PrivateBroker,
    PrivateRabbitMQ,
    PrivateRedis,
    cleanup_amqp_queue,
    cleanup_redis_queue,
    new_queue_name,
)
from filejobs.testing.s3 import S3Bucket
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.services import fresh_postgres_database, require_port, unavailable_skips

BROKERS = {
    "redis": ("Redis", 6379, "redis://127.0.0.1:6379/0"),
    "amqp": ("RabbitMQ", 5672, "amqp://guest:guest@127.0.0.1:5672//"),
}

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new PostgreSQL database for this test (plain ``postgresql://`` URL), dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own, so tests never see each other's messages."""
    return new_queue_name()


@pytest.fixture(params=sorted(BROKERS))
def broker_url(request: pytest.FixtureRequest, queue_name: str) -> Iterator[str]:
    """The machine's Redis or RabbitMQ; the test's queue is deleted afterwards (after the
    cluster's processes are gone: the cluster fixture depends on this one)."""
    name, port, url = BROKERS[request.param]
    require_port(name, "127.0.0.1", port)
    yield url
    if request.param == "redis":
        cleanup_redis_queue(url, queue_name)
    else:
        cleanup_amqp_queue(url, queue_name)


@pytest.fixture
def private_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateBroker]:
    """A broker process of this test's own (parametrize indirectly with "redis" or "amqp"),
    started; the test may stop and start it. Killed afterwards."""
    kind = getattr(request, "param", "redis")
    with unavailable_skips():  # no redis-server / rabbitmq-server here
        broker: PrivateBroker = (
            PrivateRedis(tmp_path / "redis") if kind == "redis" else PrivateRabbitMQ(tmp_path / "rabbitmq")
        )
    try:
        with unavailable_skips():
            took = broker.start()
        request.node.user_properties.append(("broker_start_seconds", round(took, 2)))
        print(f"private {kind} broker started in {took:.2f} s")
        yield broker
    finally:
        broker.close()
        print(f"----- private {kind} broker log (tail) -----\n{broker.log_tail()}")


@pytest.fixture
def make_cluster(tmp_path: Path, pg_url: str, queue_name: str) -> Iterator[ClusterFactory]:
    """``make_cluster(broker_url)`` → a :class:`Cluster` on this test's database and queue."""
    clusters: list[Cluster] = []

    def make(broker_url: str, storage_env: dict[str, str] | None = None) -> Cluster:
        cluster = Cluster(
            tmp_path,
            database_url=pg_url,
            broker_url=broker_url,
            queue=queue_name,
            processors=TEST_PROCESSORS,
            storage_env=storage_env,
        )
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()
        for cluster in clusters:
            cluster.print_logs()


@pytest.fixture
def cluster(broker_url: str, make_cluster: ClusterFactory) -> Iterator[Cluster]:
    """A cluster on the machine's broker (``broker_url``'s parameter). Its processes are killed
    here, before ``broker_url``'s teardown deletes the queue they used."""
    cluster = make_cluster(broker_url)
    try:
        yield cluster
    finally:
        cluster.close()


Record = Callable[[str, float], None]


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Record:
    """``record(name, seconds)`` keeps a measured duration with the test's report
    (``user_properties``: the JUnit XML's properties; shown by ``-rP``), asserting nothing."""

    def keep(name: str, seconds: float) -> None:
        request.node.user_properties.append((name, round(seconds, 2)))
        print(f"{request.node.name}: {name} = {seconds:.2f}")

    return keep


@pytest.fixture
def s3_cluster(queue_name: str, make_cluster: ClusterFactory, s3_bucket: S3Bucket) -> Iterator[Cluster]:
    """A cluster on the machine's Redis whose files live in a test bucket (moto's S3 server):
    every API server and worker has a data directory of its own, shared with no other."""
    name, port, url = BROKERS["redis"]
    require_port(name, "127.0.0.1", port)
    cluster = make_cluster(url, s3_bucket.env)
    try:
        yield cluster
    finally:
        cluster.close()
        cleanup_redis_queue(url, queue_name)
