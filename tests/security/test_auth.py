"""``Authorization: Bearer <key>`` on ``/v1``: open until a key exists (or FILEJOBS_REQUIRE_AUTH),
then 401 with ``WWW-Authenticate`` for a missing, malformed, unknown or revoked key.

Keys are made with :func:`filejobs.keys.create_key` on the app's database before the app's first
``/v1`` request, so the :class:`~filejobs.keys.AuthGate` reads them on that request; the one test
about the gate's 1 s cache moves a fake clock instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.app import create_app
from filejobs.ids import new_job_id
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.services import Services
from filejobs.testing import Server, bearer, keys_cli, submit
from tests.conftest import burst_worker, make_settings
from tests.jobs.helpers import wait_until
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.security.helpers import (
    REALM,
    Clock,
    StreamedBody,
    asgi_call,
    assert_nothing_stored,
    assert_problem,
    job_count,
)

INVALID_TOKEN = f'{REALM}, error="invalid_token"'
INVALID_REQUEST = f'{REALM}, error="invalid_request"'


@pytest.fixture
def secret(services: Services) -> str:
    _key, value = keys.create_key(services.db, "alice")
    return value


def endpoints(job_id: str) -> list[tuple[str, str]]:
    """Every /v1 operation, on a job that exists (so a 401 cannot be a 404 in disguise)."""
    return [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("POST", "/v1/jobs/by-hash"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}?wait=0.05"),
        ("GET", f"/v1/jobs/{job_id}/result"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
        ("DELETE", f"/v1/jobs/{job_id}"),
        ("GET", "/v1/processors"),
    ]


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    if (method, path) == ("POST", "/v1/jobs"):
        return client.post("/v1/jobs", files={"file": ("a.txt", b"abc\n", "text/plain")}, headers=headers)
    if (method, path) == ("POST", "/v1/jobs/by-hash"):
        return client.post("/v1/jobs/by-hash", json={"items": [{"file_sha256": "0" * 64}]}, headers=headers)
    return client.request(method, path, headers=headers)


def assert_unauthorized(response: httpx.Response, challenge: str) -> dict[str, Any]:
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"] == challenge
    assert body["title"] == "Unauthorized"
    return body


# ---- open service ---------------------------------------------------------------------------


def test_an_open_service_serves_requests_without_a_key(client: TestClient) -> None:
    job_id = submit(client)["id"]
    assert client.get("/v1/jobs").json()["items"][0]["id"] == job_id
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert client.get("/v1/processors").status_code == 200


def test_an_open_service_still_refuses_a_wrong_key(client: TestClient) -> None:
    """A key that is sent is checked even while keys are optional: never silently anonymous."""
    assert_unauthorized(client.get("/v1/jobs", headers=bearer("fj_" + "A" * 43)), INVALID_TOKEN)
    assert_unauthorized(client.get("/v1/jobs", headers={"Authorization": "Basic eDp5"}), INVALID_REQUEST)


# ---- keys required --------------------------------------------------------------------------


def test_every_v1_endpoint_needs_a_key_once_one_exists(
    client: TestClient, services: Services, secret: str
) -> None:
    job_id = submit(client, key=secret)["id"]
    wrong = "fj_" + "x" * 43

    for method, path in endpoints(job_id):
        missing = call(client, method, path, {})
        body = assert_unauthorized(missing, REALM)
        assert "Bearer" in body["detail"]
        assert_unauthorized(call(client, method, path, bearer(wrong)), INVALID_TOKEN)
        assert_unauthorized(call(client, method, path, bearer("not-even-a-key")), INVALID_TOKEN)
        assert_unauthorized(call(client, method, path, {"Authorization": "Basic eDp5"}), INVALID_REQUEST)
        assert_unauthorized(call(client, method, path, {"Authorization": "Bearer"}), INVALID_REQUEST)
        assert_unauthorized(call(client, method, path, {"Authorization": "Bearer   "}), INVALID_REQUEST)
        assert wrong not in call(client, method, path, bearer(wrong)).text  # never echoed

    # None of the refused requests did anything.
    assert job_count(services.db) == 1
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(secret)).json()
    assert job["status"] == "queued"


def test_a_valid_key_is_served_on_every_v1_endpoint(
    client: TestClient, services: Services, secret: str
) -> None:
    auth = bearer(secret)
    done = submit(client, key=secret)["id"]
    assert burst_worker(services).drain() == 1
    other = submit(client, key=secret)["id"]

    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert client.get(f"/v1/jobs/{done}", headers=auth).json()["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{done}?wait=0.05", headers=auth).status_code == 200
    assert client.get(f"/v1/jobs/{done}/result", headers=auth).status_code == 200
    assert client.post(f"/v1/jobs/{other}/cancel", headers=auth).json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{other}/retry", headers=auth).status_code == 202
    assert client.delete(f"/v1/jobs/{other}", headers=auth).status_code == 204
    processors = client.get("/v1/processors", headers=auth)
    assert processors.status_code == 200
    assert "inspect" in {p["name"] for p in processors.json()["items"]}
    # The scheme is case-insensitive and surrounding spaces are tolerated (RFC 9110 §11.1).
    assert client.get("/v1/jobs", headers={"Authorization": f"bearer  {secret} "}).status_code == 200


def test_a_revoked_key_is_refused_at_once(client: TestClient, services: Services, secret: str) -> None:
    _key, other = keys.create_key(services.db, "bob")
    assert client.get("/v1/jobs", headers=bearer(secret)).status_code == 200

    keys.revoke_key(services.db, "alice")

    # find_key reads the database on every request: no cache delays a revocation.
    assert_unauthorized(client.get("/v1/jobs", headers=bearer(secret)), INVALID_TOKEN)
    assert_unauthorized(call(client, "POST", "/v1/jobs", bearer(secret)), INVALID_TOKEN)
    assert client.get("/v1/jobs", headers=bearer(other)).status_code == 200
    assert job_count(services.db) == 0


class RevokedMidway(StreamedBody):
    """A body whose sender's key is revoked (as ``filejobs keys revoke`` does, in the database)
    once half of it has been sent."""

    def __init__(self, size: int, revoke: Callable[[], None]) -> None:
        super().__init__(size=size)
        self.revoke = revoke

    def next_message(self) -> dict[str, Any] | None:
        if self.chunks_read == 1 + self.size // self.chunk // 2:
            self.revoke()
        return super().next_message()


@pytest.mark.parametrize("anonymous", [False, True], ids=["revoked key", "first key made"])
def test_an_upload_is_refused_at_its_end_when_its_caller_is_no_longer_let_in(
    client: TestClient, services: Services, anonymous: bool
) -> None:
    """The README's promise, "fails at once", holds for an upload that began before the revoke:
    the job is not recorded (401), and nothing of the upload stays."""
    if anonymous:  # an open service, closed by its first key while the upload streams
        headers = {}

        def revoke() -> None:
            keys.create_key(services.db, "alice")
            services.auth.ttl = 0  # the gate's 1 s cache, as if it had run out

        challenge = REALM
    else:
        _key, secret = keys.create_key(services.db, "alice")
        headers = bearer(secret)

        def revoke() -> None:
            keys.revoke_key(services.db, "alice")

        challenge = INVALID_TOKEN
    body = RevokedMidway(size=1024 * 1024, revoke=revoke)
    answer = asgi_call(client, "POST", "/v1/jobs", body, headers=headers)

    assert answer.status == 401, answer.body
    assert answer.headers["www-authenticate"] == challenge
    assert answer.headers["content-type"] == "application/problem+json"
    assert body.bytes_read == body.length  # refused at the end, not before
    assert_nothing_stored(services, uploads=0, jobs=0)


def test_require_auth_without_any_key(data_dir: Path) -> None:
    app = create_app(make_settings(data_dir, require_auth=True), dispatcher=InMemoryDispatcher())
    with TestClient(app, raise_server_exceptions=False) as client:
        assert_unauthorized(client.get("/v1/jobs"), REALM)
        assert_unauthorized(client.get("/v1/processors"), REALM)
        assert_unauthorized(call(client, "POST", "/v1/jobs", {}), REALM)
        assert_unauthorized(client.get("/v1/jobs", headers=bearer("fj_" + "y" * 43)), INVALID_TOKEN)
        assert job_count(client.app_state["services"].db) == 0

        _key, secret = keys.create_key(client.app_state["services"].db, "first")
        assert client.get("/v1/jobs", headers=bearer(secret)).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
def test_operational_endpoints_need_no_key(client: TestClient, secret: str, path: str) -> None:
    assert_unauthorized(client.get("/v1/jobs"), REALM)  # keys are required...
    assert client.get(path).status_code == 200  # ...but not here


def test_the_openapi_schema_documents_401_on_every_v1_operation(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operations = [
        (method, path, operation)
        for path, item in schema["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
    ]
    # jobs: submit, list, get, result, cancel, retry, delete, events; all events; processors;
    # webhooks: create, list, get, patch, delete, rotate-secret, test, deliveries, retry; callback-secret;
    # uploads (tus): create, head, patch, delete (OPTIONS, discovery without a key, is not listed);
    # files: get by SHA-256 (HEAD is answered as the GET); jobs by hash (many in one request)
    assert len(operations) == 26

    for method, path, operation in operations:
        assert "401" in operation["responses"], (method, path)
        assert "429" in operation["responses"], (method, path)  # the per-key rate limit
        content = operation["responses"]["401"]["content"]
        assert content["application/problem+json"]["schema"]["$ref"] == "#/components/schemas/ProblemDetails"
    for path in ("/healthz", "/metrics"):
        assert all("401" not in op["responses"] for op in schema["paths"][path].values())


def v1_security(client: TestClient) -> list[list[dict[str, list[str]]]]:
    schema = client.get("/openapi.json").json()
    return [
        op["security"]
        for path, item in schema["paths"].items()
        if path.startswith("/v1/")
        for op in item.values()
    ]


def test_the_openapi_schema_says_a_key_is_optional_only_while_the_service_is_open(
    client: TestClient, services: Services
) -> None:
    """OpenAPI spells an optional scheme as an empty requirement beside it: what an outside tool
    (schemathesis' auth checks, a client generator) reads to know whether it must send a key."""
    open_ = v1_security(client)
    assert open_
    assert all(security == [{"apiKey": []}, {}] for security in open_), open_
    keys.create_key(services.db, "alice")
    services.auth.ttl = 0  # no cache: the gate re-reads now
    closed = v1_security(client)
    assert closed
    assert all(security == [{"apiKey": []}] for security in closed), closed
    assert client.app.openapi()["paths"]["/v1/jobs"]["get"]["security"] == [{"apiKey": []}]  # type: ignore[attr-defined]


def test_the_openapi_schema_says_a_key_is_required_with_require_auth(data_dir: Path) -> None:
    app = create_app(make_settings(data_dir, require_auth=True), dispatcher=InMemoryDispatcher())
    with TestClient(app) as client:
        security = v1_security(client)
    assert security
    assert all(s == [{"apiKey": []}] for s in security), security


# ---- the gate's cache of "are keys required" ------------------------------------------------


def test_a_new_key_closes_an_open_service_within_the_gate_ttl(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AuthGate re-reads "does any key exist" at most once a second (keys are made by another
    process); a moved clock shows both sides of that second without sleeping."""
    clock = Clock()
    monkeypatch.setattr(keys, "time", SimpleNamespace(monotonic=clock.monotonic))
    assert client.get("/v1/jobs").status_code == 200  # read now: no key, open

    keys.create_key(services.db, "alice")
    clock.advance(0.5)
    assert client.get("/v1/jobs").status_code == 200  # still the cached answer
    clock.advance(0.5)
    assert_unauthorized(client.get("/v1/jobs"), REALM)  # 1 s later: re-read, closed
    clock.advance(10)
    assert_unauthorized(client.get("/v1/jobs"), REALM)


def test_revoking_the_last_key_does_not_reopen_the_service(
    client: TestClient, services: Services, secret: str
) -> None:
    assert_unauthorized(client.get("/v1/jobs"), REALM)
    keys.revoke_key(services.db, "alice")
    services.auth.ttl = 0  # no cache: the gate re-reads now

    response = client.get("/v1/jobs")

    assert_unauthorized(response, REALM)


def test_unknown_job_ids_still_need_a_key(client: TestClient, secret: str) -> None:
    """Authentication comes before the lookup: an anonymous caller cannot probe which ids exist."""
    assert_unauthorized(client.get(f"/v1/jobs/{new_job_id()}"), REALM)
    assert_unauthorized(client.get("/v1/jobs/not-an-id"), REALM)


# ---- a real server, keys made by the CLI in another process ---------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = {"FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS), "FILEJOBS_WORKERS": "1"}
    with Server(tmp_path / "data", env=env, log_path=tmp_path / "server.log") as running:
        yield running
    print(f"----- server log (tail) -----\n{running.log_tail(60)}")


@pytest.mark.e2e
def test_a_running_server_picks_up_keys_made_and_revoked_by_the_cli(server: Server) -> None:
    with server.client() as http:
        assert http.get("/v1/jobs").status_code == 200

        secret = keys_cli(server.data_dir, "create", "ci")
        made = time.monotonic()

        def refused_anonymous() -> httpx.Response | None:
            response = http.get("/v1/jobs")
            return response if response.status_code == 401 else None

        refused = wait_until(
            refused_anonymous, timeout=10, interval=0.05, what="the server to require the new key"
        )
        assert time.monotonic() - made < 5  # the gate re-reads every second (plus slack for load)
        assert refused.headers["www-authenticate"] == REALM
        assert refused.headers["content-type"] == "application/problem+json"
        assert http.get("/v1/jobs", headers=bearer(secret)).status_code == 200

        keys_cli(server.data_dir, "revoke", "ci")
        assert http.get("/v1/jobs", headers=bearer(secret)).status_code == 401  # at once
