"""Slow receivers, many deliveries: nothing is lost, nobody is starved, the API keeps answering."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.testing import submit
from filejobs.testing.webhooks import Receiver
from tests.conftest import burst_worker, make_settings
from tests.webhooks.conftest import FAST, add_webhook, wait_until


def test_a_slow_receiver_is_retried_and_the_api_stays_responsive(data_dir: Path) -> None:
    # WEBHOOK_TIMEOUT 5 s: the answers below must come while the first attempt is still held
    # (an API waiting on the delivery would answer only after it failed): an order, not a timer.
    settings = make_settings(data_dir, **{**FAST, "webhook_timeout": 5.0})
    with Receiver() as receiver, TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        receiver.hang()
        sender = client.app_state["services"].webhooks._http
        forgotten: list[str] = []
        forget = sender.forget
        sender.forget = lambda target: (forgotten.append(str(target.url)), forget(target))
        hook = add_webhook(client, receiver.url)
        deliveries = f"/v1/webhooks/{hook['id']}/deliveries"
        job_id = submit(client)["id"]
        burst_worker(client.app_state["services"]).drain()
        receiver.wait_count(1)
        for _ in range(10):
            assert client.get(f"/v1/jobs/{job_id}").status_code == 200
            [held] = client.get(deliveries).json()["items"]
            assert held["status"] == "pending"
            assert not held["last_error"], held  # the first attempt had not ended yet
        failed = wait_until(
            lambda: (d := client.get(deliveries).json()["items"][0])["last_error"] and d,
            what="the timed-out attempt recorded",
        )
        assert failed["status"] == "pending"
        assert "no answer within 5 s" in failed["last_error"]
        # The cancelled request's pool is not used again (httpcore can leave it stuck).
        assert forgotten == [receiver.url]
        receiver.release()
        wait_until(
            lambda: client.get(deliveries).json()["items"][0]["status"] == "delivered",
            what="delivered after the receiver answered",
        )
        ids = {r.webhook_id for r in receiver.requests}
        assert len(ids) == 1
        assert len(receiver.requests) >= 2


def test_a_slow_endpoint_does_not_starve_another(data_dir: Path) -> None:
    settings = make_settings(
        data_dir,
        **{**FAST, "webhook_timeout": 5.0, "webhook_endpoint_concurrency": 2, "webhook_concurrency": 8},
    )
    with (
        Receiver() as slow,
        Receiver() as fast,
        TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client,
    ):
        slow.hang()
        slow_hook = add_webhook(client, slow.url)
        add_webhook(client, fast.url)
        for _ in range(12):
            submit(client)["id"]
        burst_worker(client.app_state["services"]).drain()
        fast.wait_count(12)
        # all twelve arrived while the slow endpoint's first attempts were still held (an order, not a
        # timer: they end after WEBHOOK_TIMEOUT, 5 s, and are then recorded)
        held = client.get(f"/v1/webhooks/{slow_hook['id']}/deliveries").json()["items"]
        assert not any(d["last_error"] for d in held), held
        assert len(slow.requests) == 2  # at most WEBHOOK_ENDPOINT_CONCURRENCY in flight
        slow.release()
        wait_until(
            lambda: (
                [
                    d["status"]
                    for d in client.get(f"/v1/webhooks/{slow_hook['id']}/deliveries").json()["items"]
                ]
                == ["delivered"] * 12
            ),
            what="the slow endpoint's deliveries all delivered",
        )
        assert len({r.webhook_id for r in slow.requests}) == 12


def test_200_jobs_2_endpoints_400_deliveries_none_lost(data_dir: Path) -> None:
    settings = make_settings(data_dir, **FAST)
    with (
        Receiver() as first,
        Receiver() as second,
        TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client,
    ):
        first.fail(15, 502)  # some failed attempts: the only place duplicates may come from
        hooks = [add_webhook(client, first.url), add_webhook(client, second.url)]
        job_ids = {submit(client, f"file {n}\n".encode())["id"] for n in range(200)}
        burst_worker(client.app_state["services"]).drain()
        for receiver, hook in zip((first, second), hooks, strict=True):
            receiver.wait_for(
                lambda requests: len({r.webhook_id for r in requests if r.answered == 200}) == 200, 60
            )
            by_id = defaultdict(list)
            for request in receiver.requests:
                by_id[request.webhook_id].append(request)
            assert len(by_id) == 200
            jobs = set()
            for attempts in by_id.values():
                # delivered once; any earlier attempt of the same id failed
                assert [a.answered for a in attempts][-1] == 200
                assert all(a.answered != 200 for a in attempts[:-1])
                event = attempts[-1].verify(hook["secret"])
                assert isinstance(event, dict)
                jobs.add(event["data"]["id"])
            assert jobs == job_ids
        assert sum(len(r.requests) for r in (first, second)) == 400 + 15
        wait_until(
            lambda: all(
                client.get(f"/v1/jobs/{job_id}").json()["notification"] == "delivered" for job_id in job_ids
            ),
            what="every job's notification delivered",
        )


def test_undelivered_deliveries_per_key_are_bounded(data_dir: Path) -> None:
    settings = make_settings(data_dir, **{**FAST, "webhook_max_pending": 2, "webhook_timeout": 5.0})
    with Receiver() as receiver, TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        receiver.hang()
        hook = add_webhook(client, receiver.url)
        job_ids = [submit(client)["id"] for _ in range(4)]
        burst_worker(client.app_state["services"]).drain()
        items = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"]
        by_status = sorted(item["status"] for item in items)
        assert by_status == ["failed", "failed", "pending", "pending"]
        over = [item for item in items if item["status"] == "failed"]
        assert all("WEBHOOK_MAX_PENDING" in item["last_error"] for item in over)
        notifications = sorted(client.get(f"/v1/jobs/{j}").json()["notification"] for j in job_ids)
        assert notifications == ["failed", "failed", "pending", "pending"]
        receiver.release()
        wait_until(
            lambda: (
                sorted(
                    i["status"] for i in client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"]
                )
                == ["delivered", "delivered", "failed", "failed"]
            ),
            what="the two within the bound delivered",
        )
