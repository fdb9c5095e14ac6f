"""``/v1/webhooks``: registering, the URL checks (422), per-key ownership (404), secrets shown once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.testing.webhooks import Receiver
from tests.conftest import make_settings
from tests.webhooks.conftest import FAST, add_webhook


@pytest.fixture
def strict_client(data_dir: Path) -> Iterator[TestClient]:
    """The defaults: https only, public addresses only."""
    with TestClient(create_app(make_settings(data_dir), dispatcher=InMemoryDispatcher())) as client:
        yield client


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://10.0.0.8/hook", "private"),
        ("https://[::1]/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://localhost/hook", "loopback"),
        ("http://93.184.215.14/hook", "https"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
        ("not a url", "Not a"),
        ("https://user:secret@93.184.215.14/hook", "password"),
    ],
)
def test_refused_urls_are_422_with_a_clear_detail(strict_client: TestClient, url: str, detail: str) -> None:
    response = strict_client.post("/v1/webhooks", json={"url": url})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    assert strict_client.get("/v1/webhooks").json()["items"] == []


def test_a_public_https_url_is_accepted(strict_client: TestClient) -> None:
    created = add_webhook(strict_client, "https://93.184.215.14/hook")
    assert created["url"] == "https://93.184.215.14/hook"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": "https://93.184.215.14/", "events": []},
        {"url": "https://93.184.215.14/", "events": ["job.exploded"]},
        {"url": "https://93.184.215.14/", "surprise": 1},
        {"url": "https://93.184.215.14/", "description": "x" * 501},
        {"url": 42},
    ],
)
def test_invalid_bodies_are_422(strict_client: TestClient, body: dict[str, object]) -> None:
    response = strict_client.post("/v1/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_crud_and_the_secret_shown_once(client: TestClient, receiver: Receiver) -> None:
    created = add_webhook(client, receiver.url, events=["job.failed", "job.failed"], description="ops")
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["job.failed"]
    assert created["enabled"] is True
    listed = client.get("/v1/webhooks").json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]
    assert listed[0]["secret"] == created["secret"][:10] + "…"
    one = client.get(f"/v1/webhooks/{created['id']}")
    assert one.status_code == 200
    assert one.json()["secret"].endswith("…")

    patched = client.patch(
        f"/v1/webhooks/{created['id']}", json={"events": ["job.succeeded"], "description": "new"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["events"] == ["job.succeeded"]
    assert patched.json()["description"] == "new"
    assert client.patch(f"/v1/webhooks/{created['id']}", json={"url": "gopher://x"}).status_code == 422

    rotated = client.post(f"/v1/webhooks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None

    # both secrets sign during the grace period
    assert client.post(f"/v1/webhooks/{created['id']}/test").status_code == 202
    [request] = receiver.wait_count(1)
    request.verify(created["secret"])
    request.verify(rotated.json()["secret"])

    assert client.delete(f"/v1/webhooks/{created['id']}").status_code == 204
    assert client.get(f"/v1/webhooks/{created['id']}").status_code == 404
    assert client.delete(f"/v1/webhooks/{created['id']}").status_code == 404


def test_the_number_of_endpoints_per_key_is_bounded(data_dir: Path) -> None:
    settings = make_settings(data_dir, **{**FAST, "webhook_max_endpoints": 2})
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        add_webhook(client, "http://127.0.0.1:9/a")
        add_webhook(client, "http://127.0.0.1:9/b")
        response = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/c"})
        assert response.status_code == 409
        assert "WEBHOOK_MAX_ENDPOINTS" in response.json()["detail"]


def test_another_keys_webhook_is_404(client: TestClient) -> None:
    services = client.app_state["services"]
    _, alice = keys.create_key(services.db, "alice")
    _, bob = keys.create_key(services.db, "bob")
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_bob = {"Authorization": f"Bearer {bob}"}
    created = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/a"}, headers=as_alice).json()
    hook = f"/v1/webhooks/{created['id']}"
    assert client.get("/v1/webhooks", headers=as_bob).json()["items"] == []
    for method, path in [
        ("GET", hook),
        ("PATCH", hook),
        ("DELETE", hook),
        ("POST", f"{hook}/rotate-secret"),
        ("POST", f"{hook}/test"),
        ("GET", f"{hook}/deliveries"),
        ("POST", f"{hook}/deliveries/msg_x/retry"),
    ]:
        response = client.request(method, path, headers=as_bob, json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get(hook, headers=as_alice).status_code == 200
    assert client.get(hook).status_code == 401


@pytest.mark.parametrize("webhook_id", ["nope", "ep_123", "../x", "ep_" + "0" * 36])
def test_unknown_ids_are_404(client: TestClient, webhook_id: str) -> None:
    assert client.get(f"/v1/webhooks/{webhook_id}").status_code == 404


def test_unknown_delivery_is_404(client: TestClient) -> None:
    created = add_webhook(client, "http://127.0.0.1:9/a")
    response = client.post(f"/v1/webhooks/{created['id']}/deliveries/msg_nope/retry")
    assert response.status_code == 404


def test_default_secret_is_made_and_rotated(client: TestClient) -> None:
    first = client.post("/v1/callback-secret")
    assert first.status_code == 200
    assert first.json()["secret"].startswith("whsec_")
    assert first.json()["previous_secret_expires_at"] is None
    second = client.post("/v1/callback-secret").json()
    assert second["secret"] != first.json()["secret"]
    assert second["previous_secret_expires_at"] is not None


def test_bodies_are_read_after_the_key_is_checked(client: TestClient) -> None:
    services = client.app_state["services"]
    _, alice = keys.create_key(services.db, "alice")
    for body in (b"{not json", b'{"url": 42}', b"x" * 100_000):
        assert client.post("/v1/webhooks", content=body).status_code == 401
    as_alice = {"Authorization": f"Bearer {alice}"}
    bad_json = client.post("/v1/webhooks", content=b"{not json", headers=as_alice)
    assert bad_json.status_code == 400
    assert bad_json.json()["detail"] == "The body is not valid JSON."
    invalid = client.post("/v1/webhooks", content=b'{"url": 42}', headers=as_alice)
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"] == ["url"]
    huge = client.post("/v1/webhooks", content=b"x" * 100_000, headers=as_alice)
    assert huge.status_code == 413
    assert huge.headers["content-type"] == "application/problem+json"
