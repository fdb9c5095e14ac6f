"""Delivery end to end in one process: the outbox row, the signed POST, retries, the job's state."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from filejobs.jobs.worker import LocalWorker
from filejobs.testing import submit
from filejobs.testing.webhooks import Receiver
from tests.webhooks.conftest import add_webhook, wait_until


def _deliveries(client: TestClient, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_a_finished_job_is_posted_signed_with_its_body(
    client: TestClient, worker: LocalWorker, receiver: Receiver
) -> None:
    hook = add_webhook(client, receiver.url)
    job_id = submit(client)["id"]
    worker.drain()
    [request] = receiver.wait_count(1)
    event = request.verify(hook["secret"])
    assert isinstance(event, dict)
    assert event["type"] == "job.succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert event["data"]["id"] == job_id
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["result"] == job["result"]
    assert request.headers["content-type"] == "application/json"
    assert request.webhook_id.startswith("msg_")
    body = wait_until(
        lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["notification"] == "delivered" and j
    )
    assert body["notification"] == "delivered"
    [delivery] = _deliveries(client, hook["id"])
    assert delivery["id"] == request.webhook_id
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200


def test_no_endpoint_no_notification(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(client)["id"]
    worker.drain()
    assert client.get(f"/v1/jobs/{job_id}").json()["notification"] is None


def test_down_for_three_attempts_then_up_is_delivered_once_with_one_id(
    client: TestClient, worker: LocalWorker, receiver: Receiver
) -> None:
    receiver.drop(3)  # three attempts end in a network error (hung up on, no answer)
    hook = add_webhook(client, receiver.url)
    submit(client)["id"]
    worker.drain()
    receiver.wait_count(4)
    wait_until(lambda: _deliveries(client, hook["id"])[0]["status"] == "delivered")
    requests = receiver.requests
    assert [r.answered for r in requests] == [-1, -1, -1, 200]
    assert len({r.webhook_id for r in requests}) == 1
    assert len({r.body for r in requests}) == 1  # the same event every time
    for request in requests:
        request.verify(hook["secret"])
    [delivery] = _deliveries(client, hook["id"])
    assert delivery["attempts"] == 4
    assert len(receiver.delivered()) == 1


def test_connection_refused_is_retried(client: TestClient, worker: LocalWorker, receiver: Receiver) -> None:
    hook = add_webhook(client, receiver.url)
    receiver.down()
    submit(client)["id"]
    worker.drain()
    wait_until(lambda: (d := _deliveries(client, hook["id"])) and d[0]["attempts"] >= 2, what="two attempts")
    [delivery] = _deliveries(client, hook["id"])
    assert delivery["status"] == "pending"
    assert delivery["last_status_code"] is None
    assert delivery["last_error"]
    receiver.up()
    receiver.wait_count(1)
    wait_until(lambda: _deliveries(client, hook["id"])[0]["status"] == "delivered")


def test_gives_up_after_the_schedule(client: TestClient, worker: LocalWorker, receiver: Receiver) -> None:
    receiver.answer(500)
    hook = add_webhook(client, receiver.url)
    job_id = submit(client)["id"]
    worker.drain()
    schedule = client.app_state["services"].settings.webhook_retry_schedule
    wait_until(lambda: _deliveries(client, hook["id"])[0]["status"] == "failed", what="giving up")
    assert len(receiver.requests) == len(schedule) + 1
    assert client.get(f"/v1/jobs/{job_id}").json()["notification"] == "failed"
    [delivery] = _deliveries(client, hook["id"])
    assert delivery["last_error"] == "answered 500"
    # a retry by hand sends it again
    receiver.answer(200)
    response = client.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry")
    assert response.status_code == 202, response.text
    wait_until(lambda: _deliveries(client, hook["id"])[0]["status"] == "delivered")
    assert receiver.requests[-1].webhook_id == delivery["id"]
    assert client.get(f"/v1/jobs/{job_id}").json()["notification"] == "delivered"


def test_410_gone_disables_the_endpoint(client: TestClient, worker: LocalWorker, receiver: Receiver) -> None:
    receiver.answer(410)
    hook = add_webhook(client, receiver.url)
    submit(client)["id"]
    worker.drain()
    wait_until(lambda: not client.get(f"/v1/webhooks/{hook['id']}").json()["enabled"], what="disabled")
    assert "410" in client.get(f"/v1/webhooks/{hook['id']}").json()["disabled_reason"]
    assert len(receiver.requests) == 1
    # a disabled endpoint gets nothing more, and says so to a test
    submit(client)["id"]
    worker.drain()
    assert client.post(f"/v1/webhooks/{hook['id']}/test").status_code == 409
    assert len(receiver.requests) == 1
    # enabled again, it gets the next events
    receiver.answer(200)
    assert client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True}).status_code == 200
    submit(client)["id"]
    worker.drain()
    receiver.wait_count(2)


def test_an_endpoint_failing_longer_than_the_limit_is_disabled(data_dir: Any, receiver: Receiver) -> None:
    from filejobs.app import create_app
    from filejobs.jobs.dispatch import InMemoryDispatcher
    from tests.conftest import burst_worker, make_settings
    from tests.webhooks.conftest import FAST

    settings = make_settings(
        data_dir, **{**FAST, "webhook_disable_after": 0.3, "webhook_retry_schedule": [0.2] * 20}
    )
    receiver.answer(500)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        hook = add_webhook(client, receiver.url)
        submit(client)["id"]
        burst_worker(client.app_state["services"]).drain()
        found = wait_until(
            lambda: (h := client.get(f"/v1/webhooks/{hook['id']}").json())["enabled"] is False and h,
            what="disabled after failing",
        )
        assert "every attempt failed" in found["disabled_reason"]
        [delivery] = _deliveries(client, hook["id"])
        assert delivery["status"] == "failed"
        assert delivery["last_error"].startswith("endpoint disabled")


def test_the_test_event(client: TestClient, receiver: Receiver) -> None:
    hook = add_webhook(client, receiver.url)
    response = client.post(f"/v1/webhooks/{hook['id']}/test")
    assert response.status_code == 202, response.text
    [request] = receiver.wait_count(1)
    event = request.verify(hook["secret"])
    assert isinstance(event, dict)
    assert event["type"] == "webhook.test"
    assert request.webhook_id == response.json()["id"]


def test_events_filter(client: TestClient, worker: LocalWorker, receiver: Receiver) -> None:
    failures = add_webhook(client, receiver.url, events=["job.failed"])
    everything = add_webhook(client, receiver.url + "?all")
    submit(client)["id"]
    worker.drain()
    [request] = receiver.wait_count(1)
    request.verify(everything["secret"])
    assert request.path.endswith("?all")
    assert _deliveries(client, failures["id"]) == []


def test_cancelled_job_sends_job_cancelled(client: TestClient, receiver: Receiver) -> None:
    hook = add_webhook(client, receiver.url, events=["job.cancelled"])
    job_id = submit(client)["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    [request] = receiver.wait_count(1)
    event = request.verify(hook["secret"])
    assert isinstance(event, dict)
    assert event["type"] == "job.cancelled"
    assert event["data"]["status"] == "cancelled"
    assert json.loads(request.body)["data"]["notification"] == "pending"


def test_a_jobs_callback_url_is_signed_with_the_keys_default_secret(
    client: TestClient, worker: LocalWorker, receiver: Receiver
) -> None:
    form = {"callback_url": receiver.url + "?job"}
    files = {"file": ("a.txt", b"abc\n", "text/plain")}
    refused = client.post("/v1/jobs", files=files, data=form)
    assert refused.status_code == 422
    assert "POST /v1/callback-secret" in refused.json()["detail"]
    secret = client.post("/v1/callback-secret").json()["secret"]
    accepted = client.post("/v1/jobs", files=files, data=form)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    worker.drain()
    [request] = receiver.wait_count(1)
    assert request.path == "/hook?job"
    event = request.verify(secret)
    assert isinstance(event, dict)
    assert event["data"]["id"] == job_id
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["notification"] == "delivered")


def test_a_callback_url_is_part_of_the_idempotent_request(client: TestClient, receiver: Receiver) -> None:
    client.post("/v1/callback-secret")
    files = {"file": ("a.txt", b"abc\n", "text/plain")}
    headers = {"Idempotency-Key": "callback-1"}
    first = client.post("/v1/jobs", files=files, data={"callback_url": receiver.url + "?a"}, headers=headers)
    assert first.status_code == 202, first.text
    again = client.post("/v1/jobs", files=files, data={"callback_url": receiver.url + "?a"}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    for form in ({"callback_url": receiver.url + "?b"}, {}):
        other = client.post("/v1/jobs", files=files, data=form, headers=headers)
        assert other.status_code == 422, other.text
        assert "different request" in other.json()["detail"]
    assert [job["id"] for job in client.get("/v1/jobs").json()["items"]] == [first.json()["id"]]


def test_a_refused_callback_url_is_422_and_leaves_nothing(data_dir: Any) -> None:
    from filejobs.app import create_app
    from filejobs.jobs.dispatch import InMemoryDispatcher
    from tests.conftest import files_under, make_settings

    with TestClient(create_app(make_settings(data_dir), dispatcher=InMemoryDispatcher())) as client:
        client.post("/v1/callback-secret")
        for url, detail in [
            ("https://127.0.0.1/x", "loopback"),
            ("http://93.184.215.14/x", "https"),
            ("nonsense", "Not a"),
            ("https://no-such-host.invalid/", "does not resolve"),
        ]:
            response = client.post(
                "/v1/jobs", files={"file": ("a.txt", b"abc\n", "text/plain")}, data={"callback_url": url}
            )
            assert response.status_code == 422, response.text
            assert "'callback_url' refused" in response.json()["detail"]
            assert detail in response.json()["detail"]
        assert client.get("/v1/jobs").json()["items"] == []
        assert files_under(data_dir) == []


def test_metrics(client: TestClient, worker: LocalWorker, receiver: Receiver) -> None:
    receiver.hang()
    add_webhook(client, receiver.url)
    submit(client)["id"]
    worker.drain()
    receiver.wait_count(1)
    text = client.get("/metrics").text
    assert "filejobs_webhook_deliveries_pending 1.0" in text
    age = float(text.split("\nfilejobs_webhook_oldest_pending_seconds ")[1].split()[0])
    assert 0.0 < age < 30.0
    receiver.release()
    # (the counters are the process's, shared with earlier tests: wait on this test's gauge)
    wait_until(lambda: "filejobs_webhook_deliveries_pending 0.0" in client.get("/metrics").text)
    text = client.get("/metrics").text
    assert "filejobs_webhook_oldest_pending_seconds 0.0" in text
    assert 'filejobs_webhook_deliveries_total{result="delivered"}' in text


def test_error_answers_are_retried_with_the_same_event(
    client: TestClient, worker: LocalWorker, receiver: Receiver
) -> None:
    receiver.fail(2, 503)
    hook = add_webhook(client, receiver.url)
    submit(client)["id"]
    worker.drain()
    receiver.wait_count(3)
    wait_until(lambda: _deliveries(client, hook["id"])[0]["status"] == "delivered")
    assert [r.answered for r in receiver.requests] == [503, 503, 200]
    assert len({(r.webhook_id, r.body) for r in receiver.requests}) == 1


def test_redirects_are_not_followed(client: TestClient, worker: LocalWorker, receiver: Receiver) -> None:
    receiver.fail(1, 302)  # with a Location on the same receiver
    hook = add_webhook(client, receiver.url)
    submit(client)["id"]
    worker.drain()
    receiver.wait_count(2)
    wait_until(lambda: _deliveries(client, hook["id"])[0]["status"] == "delivered")
    assert [(r.path, r.answered) for r in receiver.requests] == [("/hook", 302), ("/hook", 200)]


def test_a_host_name_is_resolved_and_sent_as_host(
    client: TestClient, worker: LocalWorker, receiver: Receiver
) -> None:
    add_webhook(client, f"http://localhost:{receiver.port}/hook")
    submit(client)["id"]
    worker.drain()
    [request] = receiver.wait_count(1)
    assert request.headers["host"] == f"localhost:{receiver.port}"


def test_a_job_failed_by_the_sweeper_sends_job_failed(client: TestClient, receiver: Receiver) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from filejobs.jobs import repository
    from filejobs.models import Job, utcnow

    services = client.app_state["services"]
    hook = add_webhook(client, receiver.url, events=["job.failed"])
    job_id = submit(client)["id"]
    with services.db.write() as session:  # its last attempt
        session.execute(update(Job).where(Job.id == job_id).values(max_attempts=1))  # type: ignore[arg-type]
    assert repository.claim_job(services.db, job_id, owner="gone-worker", lease_seconds=1) is not None
    moved = repository.expire_leases(services.db, now=utcnow() + timedelta(seconds=5))
    assert [(j, s.value) for j, s in moved] == [(job_id, "failed")]
    client.app_state["services"].hub.notify(job_id)  # as the sweeper's pass tells
    [request] = receiver.wait_count(1)
    event = request.verify(hook["secret"])
    assert isinstance(event, dict)
    assert (event["type"], event["data"]["error"]["code"]) == ("job.failed", "worker_lost")
