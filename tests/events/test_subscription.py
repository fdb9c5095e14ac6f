"""Subscription: what one stream is handed, in which order, merged how (no database, no server)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from filejobs.events.subscription import Deleted, Subscription


def row(version: int, status: str = "running", progress: float = 0.0, job_id: str = "a") -> SimpleNamespace:
    return SimpleNamespace(id=job_id, owner="", version=version, status=status, progress=progress)


def take(subscription: Subscription, wait: float = 0.0) -> list[object]:
    return asyncio.run(subscription.changes(wait))


def test_progress_changes_merge_and_the_latest_wins() -> None:
    subscription = Subscription(owner="")
    for version in (2, 3, 4):
        subscription.push(row(version, progress=version / 10))
    assert [change.version for change in take(subscription)] == [4]  # type: ignore[union-attr]


def test_a_status_change_is_never_hidden_by_a_later_progress_change() -> None:
    subscription = Subscription(owner="")
    subscription.push(row(1, "queued"))
    subscription.push(row(2, "running"))
    subscription.push(row(3, "running", 0.5))
    subscription.push(row(4, "succeeded", 1.0))
    seen = []
    while changes := take(subscription):
        seen += [(change.version, change.status) for change in changes]  # type: ignore[union-attr]
    assert seen == [(1, "queued"), (3, "running"), (4, "succeeded")]


def test_older_or_repeated_versions_are_dropped() -> None:
    subscription = Subscription(owner="")
    subscription.push(row(5))
    subscription.push(row(5))
    subscription.push(row(3))
    assert [change.version for change in take(subscription)] == [5]  # type: ignore[union-attr]
    subscription.push(row(5))
    assert take(subscription) == []


def test_mark_sent_skips_what_the_client_has() -> None:
    subscription = Subscription(owner="")
    subscription.mark_sent(4, "a")
    subscription.push(row(4))
    assert take(subscription) == []
    subscription.push(row(5))
    assert [change.version for change in take(subscription)] == [5]  # type: ignore[union-attr]


def test_throttle_holds_back_a_second_progress_change_of_the_same_job_only() -> None:
    subscription = Subscription(owner="", throttle=0.3)
    subscription.push(row(2, progress=0.1))
    assert len(take(subscription)) == 1
    subscription.push(row(3, progress=0.2))
    subscription.push(row(1, "queued", job_id="b"))  # another job is not held back
    assert [change.id for change in take(subscription)] == ["b"]  # type: ignore[union-attr]
    started = time.monotonic()
    held = take(subscription, wait=5.0)  # returns when the throttle lets it go, not after 5 s
    assert [change.version for change in held] == [3]  # type: ignore[union-attr]
    assert time.monotonic() - started < 4.0


def test_a_status_change_passes_the_throttle() -> None:
    subscription = Subscription(owner="", throttle=60.0)
    subscription.push(row(2, "running"))
    assert len(take(subscription)) == 1
    subscription.push(row(3, "succeeded"))
    assert [change.status for change in take(subscription)] == ["succeeded"]  # type: ignore[union-attr]


def test_a_deletion_replaces_what_was_queued_and_nothing_follows_it() -> None:
    subscription = Subscription(owner="")
    subscription.push(row(2))
    subscription.push(Deleted("a", ""))
    subscription.push(row(9))
    assert take(subscription) == [Deleted("a", "")]
    subscription.push(Deleted("a", ""))  # heard of again, e.g. from NOTIFY too
    assert take(subscription) == []


def test_nothing_to_send_returns_empty_after_the_wait() -> None:
    subscription = Subscription(owner="")
    started = time.monotonic()
    assert take(subscription, wait=0.05) == []
    assert time.monotonic() - started >= 0.05


def test_wants_is_the_tenant_and_for_a_job_stream_that_job() -> None:
    everything = Subscription(owner="alice")
    assert everything.wants("alice", "x")
    assert not everything.wants("bob", "x")
    assert not everything.wants(None, "x")  # a deletion of unknown owner goes to no tenant stream
    one = Subscription(owner="alice", job_id="x")
    assert one.wants("alice", "x")
    assert one.wants(None, "x")  # its stream was allowed to see this job
    assert not one.wants("alice", "y")
    assert not one.wants("bob", "x")
