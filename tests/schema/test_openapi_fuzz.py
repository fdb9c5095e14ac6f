"""Schemathesis against the service's own OpenAPI schema, in process, with API keys.

How it is wired:

- One app for the module: a fresh data directory, ``FILEJOBS_WORKERS=0`` and an
  :class:`InMemoryDispatcher` (no job ever runs, so nothing changes behind the fuzzer's back), no
  rate limit and no queue, unfinished-job or free-disk limit (documented ``429``/``503``/``507``
  answers that depend on the machine and on earlier requests, not on the request at hand), uploads
  up to 1 MiB. Two API keys, ``alice`` and ``bob``, exist before it starts, so every ``/v1``
  request needs one.
- Schemathesis fetches ``/openapi.json`` from the app through its own ASGI transport
  (``schemathesis.openapi.from_asgi``), which runs the app's lifespan in this process and hands the
  upload route the whole multipart body through ``request.stream()``.
- The run is schemathesis' engine, the one ``schemathesis run`` drives: probing, the coverage phase
  (deterministic boundary values and negative data for every parameter and body), fuzzing (positive
  and negative data) and stateful sequences. The schema declares no links; they are inferred from
  the ``Location`` headers and from the schema (dependency analysis), which is how
  ``POST /v1/jobs`` → ``DELETE /v1/jobs/{job_id}`` → more requests for that job arise
  (:func:`test_no_request_reached_a_deleted_job`). They seldom end on a read, which is all the
  ``use_after_free`` check looks at, so :func:`test_a_deleted_job_is_404_on_every_endpoint` tries
  every endpoint with a deleted job's id explicitly.
- Credentials come from a WFC auth document naming both keys: ``alice`` sends the requests, ``bob``
  replays alice's reads (``object_level_authorization``). The schema declares the bearer scheme on
  every ``/v1`` operation (:func:`test_the_schema_declares_the_bearer_key`), which is what gives
  ``ignored_auth`` something to check: it resends requests without the key and with a wrong one.
- Long polls: ``GET /v1/jobs/{id}?wait=S`` (up to 30 s) would spend the time budget waiting, since
  no job ever changes. The app is wrapped in a shim that divides a valid ``wait`` by 100 before the
  app sees it (so 30 becomes 0.3), leaving every other value as sent. It also records who sent
  each request and what it got, for the assertions that the run reached what it should.
- Event streams (``/v1/events``, ``/v1/jobs/{id}/events``) never end while nothing changes. The
  shim ends such a response after its first chunk (the ``retry:`` field) and tells the app the
  client left, which is what a client that stops reading does.
- Deterministic and bounded: a fixed seed, derandomized generation, no example database or cache,
  one worker, ``MAX_EXAMPLES`` per operation and phase: the same requests every run. The run
  takes 10-15 s on two idle cores, the module about 20 s.

What is tolerated (never a failure of this suite): ``EXPECTED_REJECTIONS`` are documented
rejections of schema-valid requests that the schema cannot express (an opaque cursor, params that
depend on the processor chosen (the processor itself is an enum of the registered ones), a file
type the processor refuses, an Idempotency-Key already used for another request). ``KNOWN`` is
for findings that wait for a service fix (none now: the schema findings of the first run, A-G,
are fixed and their reproducers below are plain tests).

``scripts/fuzz_api.py`` runs schemathesis' CLI against a real server for longer runs.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import jsonschema_rs
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.engine import Status, events, from_schema
from schemathesis.python.asgi import shutdown_lifespans

from filejobs.app import create_app
from filejobs.db import Database
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.worker import LocalWorker
from filejobs.keys import create_key
from filejobs.migrate import upgrade
from filejobs.services import Services
from filejobs.settings import Settings
from tests.conftest import make_settings

SEED = 20261123
MAX_EXAMPLES = 50
#: A valid ``wait`` reaches the app divided by this (30 s becomes 0.3 s).
WAIT_DIVISOR = 100
KEY_NAMES = ("alice", "bob")
PROBLEM_JSON = "application/problem+json"

#: Every check the run makes; each must run and find nothing beyond what is tolerated.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
    "object_level_authorization",
    "use_after_free",
    "ensure_resource_availability",
)


# ---- what is tolerated -----------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerated:
    """Failures of ``check`` on operations matching ``operation`` (a regex on the label, e.g.
    ``POST /v1/jobs``) answered with one of ``statuses`` whose problem detail starts with one of
    ``details`` (any detail when empty)."""

    name: str
    check: str
    operation: str
    statuses: frozenset[int]
    details: tuple[str, ...] = ()

    def covers(self, failure: Failure) -> bool:
        return (
            failure.check == self.check
            and re.fullmatch(self.operation, failure.operation) is not None
            and failure.status in self.statuses
            and (not self.details or failure.detail.startswith(self.details))
        )


EXPECTED_REJECTIONS = (
    Tolerated(
        "the cursor is opaque: only a next_cursor this service issued is valid",
        "positive_data_acceptance",
        r"GET /v1/jobs",
        frozenset({400}),
        ("The cursor is not one this service issued.",),
    ),
    Tolerated(
        "a processor's params are checked against its own params schema (documented 422)",
        "positive_data_acceptance",
        r"POST /v1/jobs",
        frozenset({422}),
        ("Invalid params for processor ",),
    ),
    Tolerated(
        "an Idempotency-Key already used for another request: a conflict with an earlier request",
        "positive_data_acceptance",
        r"POST /v1/jobs",
        frozenset({422}),
        ("This Idempotency-Key was used for a different request",),
    ),
    Tolerated(
        "the file's type is sniffed from its content and checked against the processor",
        "positive_data_acceptance",
        r"POST /v1/jobs",
        frozenset({415}),
        ("Processor ",),
    ),
)

EXPECTED_REJECTIONS += (
    Tolerated(
        "a webhook URL must be https and resolve to public addresses (SSRF checks; documented 422)",
        "positive_data_acceptance",
        r"(POST|PATCH) /v1/webhooks.*",
        frozenset({422}),
        ("'url' refused: ",),
    ),
    Tolerated(
        "a job's callback_url gets the webhook URL checks, and needs the key's callback secret",
        "positive_data_acceptance",
        r"POST /v1/jobs",
        frozenset({422}),
        ("'callback_url' refused: ", "'callback_url' needs the key's"),
    ),
)
TUS = r"(POST|HEAD|PATCH|DELETE) /v1/uploads.*"
#: What the tus protocol prescribes where schemathesis expects another status: 412 (with
#: Tus-Version) for a missing or other Tus-Resumable, 413 for a length over Tus-Max-Size or a body
#: past the declared length; and the one-of-two headers of creation, which a schema cannot say.
EXPECTED_REJECTIONS += tuple(
    Tolerated(f"tus: {name}", check, operation, frozenset({status}), details)
    for name, check, operation, status, details in (
        (
            "412 for another Tus-Resumable",
            "negative_data_rejection",
            TUS,
            412,
            ("This server speaks tus", ""),
        ),
        (
            "412 for a missing Tus-Resumable",
            "missing_required_header",
            TUS,
            412,
            ("This server speaks tus", ""),
        ),
        ("413 over Tus-Max-Size", "negative_data_rejection", r"POST /v1/uploads", 413, ("The upload is ",)),
        (
            "413 past the length",
            "negative_data_rejection",
            r"POST /v1/uploads",
            413,
            ("The chunk goes past",),
        ),
        (
            "413 past the length",
            "positive_data_acceptance",
            r"POST /v1/uploads",
            413,
            ("The chunk goes past",),
        ),
        (
            "Upload-Length or Upload-Defer-Length",
            "positive_data_acceptance",
            r"POST /v1/uploads",
            400,
            ("Send Upload-Length",),
        ),
    )
)

KNOWN: tuple[Tolerated, ...] = ()

#: tus chunks are raw bytes, as application/octet-stream bodies are.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


# ---- the app under test ----------------------------------------------------------------------


def fuzz_settings(data_dir: Path) -> Settings:
    return make_settings(
        data_dir,
        workers=0,
        processors=[],
        rate_limit=0,
        max_unfinished_jobs=0,
        max_queue_depth=0,
        min_free_disk=0,
        max_upload_bytes=1 << 20,
        max_resumable_uploads=100_000,  # the per-key bound of incomplete tus uploads: the fuzzer makes many
        max_resumable_bytes=0,
    )


def make_keys(settings: Settings, names: tuple[str, ...]) -> dict[str, str]:
    """Migrate the fresh database and make one API key per name; returns name → secret."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    try:
        return {name: create_key(db, name)[1] for name in names}
    finally:
        db.dispose()


JOB_PATH = re.compile(r"/v1/jobs/[^/]+")
EVENTS_PATH = re.compile(r"/v1/events|/v1/jobs/[^/]+/events")
WAIT_PARAM = re.compile(rb"(?:^|(?<=&))wait=([^&]*)")
#: What both Python and the app read as the same non-negative decimal.
PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def shorten_wait(scope: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/jobs/{id}?wait=S`` with a valid ``0 < S <= 30`` → ``wait=S/100``; else as sent."""
    if scope["method"] != "GET" or not JOB_PATH.fullmatch(scope["path"]):
        return scope

    def shorter(match: re.Match[bytes]) -> bytes:
        text = unquote(match.group(1).decode("latin-1"))
        if PLAIN_DECIMAL.fullmatch(text) and 0 < float(text) <= 30:
            return b"wait=" + repr(float(text) / WAIT_DIVISOR).encode()
        return match.group(0)

    query = WAIT_PARAM.sub(shorter, scope["query_string"])
    return scope if query == scope["query_string"] else {**scope, "query_string": query}


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    #: A key's name, "none" (no Authorization header) or "other" (anything else).
    identity: str
    status: int


class Harness:
    """The app as schemathesis reaches it: shortens long polls and records every exchange."""

    def __init__(self, app: Any, keys: dict[str, str]) -> None:
        self.app = app
        self.keys = keys
        self.exchanges: list[Exchange] = []

    def identity(self, scope: dict[str, Any]) -> str:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if not header:
            return "none"
        return next((name for name, key in self.keys.items() if header == f"Bearer {key}"), "other")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = shorten_wait(scope)
        status = 0
        streaming = scope["method"] == "GET" and EVENTS_PATH.fullmatch(scope["path"]) is not None
        cut = anyio.Event()

        async def watch(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and streaming:
                if cut.is_set():
                    return  # the client has gone
                if message.get("more_body", False):
                    message = {**message, "more_body": False}
                cut.set()
            await send(message)

        async def listen() -> dict[str, Any]:
            if streaming and cut.is_set():
                return {"type": "http.disconnect"}
            message: dict[str, Any] = await receive()
            if streaming and message["type"] == "http.disconnect":
                return message
            if streaming and message["type"] == "http.request" and not message.get("more_body"):
                await cut.wait()
                return {"type": "http.disconnect"}
            return message

        try:
            await self.app(scope, listen if streaming else receive, watch)
        finally:
            self.exchanges.append(Exchange(scope["method"], scope["path"], self.identity(scope), status))


def engine_config(auth_file: Path) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["too_slow"],  # timing-dependent: never a verdict in CI
            "continue-on-failure": True,
            "cache": {"enabled": False},
            "workers": 1,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "checks": {name: {"enabled": True} for name in CHECKS},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {
                    "enabled": True,
                    "inference": {"algorithms": ["location-headers", "dependency-analysis"]},
                },
            },
            "auth": {"wfc": {"path": str(auth_file), "peers": list(KEY_NAMES)}},
        }
    )


def wfc_document(keys: dict[str, str]) -> dict[str, Any]:
    return {
        "auth": [
            {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}]}
            for name, key in keys.items()
        ]
    }


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("schema")
    with pytest.MonkeyPatch.context() as env:  # settings from here only, never the shell's
        for name in list(os.environ):
            if name.startswith("FILEJOBS_") and name != "FILEJOBS_REQUIRE_SERVICES":
                env.delenv(name)
        settings = fuzz_settings(root / "data")
    keys = make_keys(settings, KEY_NAMES)
    app = create_app(settings, dispatcher=InMemoryDispatcher())
    yield Harness(app, keys)
    shutdown_lifespans()  # the app's lifespan, started by schemathesis' ASGI transport


@pytest.fixture(scope="module")
def fuzz_schema(harness: Harness, tmp_path_factory: pytest.TempPathFactory) -> Any:
    auth_file = tmp_path_factory.mktemp("schema-auth") / "auth.json"
    auth_file.write_text(json.dumps(wfc_document(harness.keys)))
    return schemathesis.openapi.from_asgi("/openapi.json", harness, config=engine_config(auth_file))


# ---- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    check: str
    operation: str
    phase: str
    title: str
    status: int | None
    detail: str
    message: str
    reproduce: str

    @property
    def key(self) -> tuple[str, str, str, int | None, str]:
        """Failures with the same key are one finding; the first one's reproduction is kept."""
        return (self.check, self.operation, self.title, self.status, self.detail)

    def describe(self) -> str:
        return (
            f"[{self.check}] {self.operation} ({self.phase}): {self.title} → HTTP {self.status}"
            f" {self.detail!r}\n    {self.message.strip()[:400]}\n    {self.reproduce.strip()[:1500]}"
        )


@dataclass
class FuzzRun:
    failures: list[Failure] = field(default_factory=list)
    tolerated: Counter[str] = field(default_factory=Counter)
    checks_run: Counter[str] = field(default_factory=Counter)
    #: (operation label, status) → responses schemathesis got.
    responses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    phases: dict[str, str] = field(default_factory=dict)
    inferred_links: int = 0
    seconds: float = 0.0

    def failures_of(self, check: str) -> list[Failure]:
        return [failure for failure in self.failures if failure.check == check]

    def summary(self) -> str:
        return (
            f"{self.seconds:.1f} s; phases {self.phases}; {self.inferred_links} inferred links; "
            f"{sum(self.responses.values())} responses; checks {dict(self.checks_run)}; "
            f"tolerated {dict(self.tolerated)}; {len(self.failures)} failures; {len(self.errors)} errors"
        )


def problem_detail(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return ""
    return str(body.get("detail", "")) if isinstance(body, dict) else ""


def record_scenario(run: FuzzRun, event: events.ScenarioFinished) -> None:
    recorder = event.recorder
    phase = event.phase.value
    for case_id, interaction in recorder.interactions.items():
        node = recorder.cases.get(case_id)
        if interaction.response is not None and node is not None:
            run.responses[node.value.operation.label, interaction.response.status_code] += 1
    for case_id, checks in recorder.checks.items():
        node = recorder.cases.get(case_id)
        operation = node.value.operation.label if node is not None else recorder.label
        for check in checks:
            run.checks_run[check.name] += 1
            if check.status != Status.FAILURE or check.failure_info is None:
                continue
            response = recorder.find_response(case_id=case_id)
            failure = Failure(
                check=check.name,
                operation=operation,
                phase=phase,
                title=check.failure_info.failure.title,
                status=response.status_code if response is not None else None,
                detail=problem_detail(response.content) if response is not None else "",
                message=check.failure_info.failure.message,
                reproduce=check.failure_info.code_sample,
            )
            tolerance = next((t for t in (*EXPECTED_REJECTIONS, *KNOWN) if t.covers(failure)), None)
            if tolerance is not None:
                run.tolerated[tolerance.name] += 1
            elif failure.key not in {known.key for known in run.failures}:
                run.failures.append(failure)


@pytest.fixture(scope="module")
def fuzz_run(fuzz_schema: Any) -> FuzzRun:
    run = FuzzRun()
    started = time.monotonic()
    for event in from_schema(fuzz_schema).execute():
        if isinstance(event, events.PhaseStarted) and isinstance(event.payload, events.StatefulPhasePayload):
            run.inferred_links = event.payload.inferred_transitions
        elif isinstance(event, events.PhaseFinished):
            skipped = event.phase.skip_reason
            run.phases[event.phase.name.value] = event.status.value + (
                f" ({skipped.value})" if skipped else ""
            )
        elif isinstance(event, events.ScenarioFinished):
            record_scenario(run, event)
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"fatal: {event.exception!r}")
    run.seconds = time.monotonic() - started
    print(f"\nschemathesis {schemathesis.__version__}, seed {SEED}: {run.summary()}")
    return run


def test_the_run_completed_every_phase(fuzz_run: FuzzRun) -> None:
    assert not fuzz_run.errors, "\n".join(fuzz_run.errors)
    for phase in ("coverage", "fuzzing", "stateful"):
        assert phase in fuzz_run.phases, fuzz_run.summary()
        assert not fuzz_run.phases[phase].startswith(("skip", "error")), fuzz_run.summary()
    assert fuzz_run.inferred_links > 0, "the stateful phase found no link between operations"


@pytest.mark.parametrize("check", CHECKS)
def test_check_finds_nothing(fuzz_run: FuzzRun, check: str) -> None:
    assert fuzz_run.checks_run[check] > 0, f"{check} never ran: {fuzz_run.summary()}"
    failures = fuzz_run.failures_of(check)
    assert not failures, f"{len(failures)} distinct {check} failures:\n" + "\n".join(
        failure.describe() for failure in failures
    )


#: What each operation must have answered at least once (a success; for the result, which never
#: exists with no worker, its documented 409).
REACHED = {
    "POST /v1/jobs": 202,
    "GET /v1/jobs": 200,
    "GET /v1/jobs/{job_id}": 200,
    "GET /v1/jobs/{job_id}/result": 409,
    "GET /v1/jobs/{job_id}/events": 200,
    "GET /v1/events": 200,
    "POST /v1/jobs/{job_id}/cancel": 200,
    "POST /v1/jobs/{job_id}/retry": 202,
    "DELETE /v1/jobs/{job_id}": 204,
    "GET /v1/processors": 200,
    "GET /v1/files/{sha256}": 404,  # a generated hash nobody stored
    "POST /v1/jobs/by-hash": 200,  # generated hashes nobody stored: each item 428
    "POST /v1/webhooks": 422,
    "GET /v1/webhooks": 200,
    "GET /v1/webhooks/{webhook_id}": 404,
    "PATCH /v1/webhooks/{webhook_id}": 404,
    "DELETE /v1/webhooks/{webhook_id}": 404,
    "POST /v1/webhooks/{webhook_id}/rotate-secret": 404,
    "POST /v1/webhooks/{webhook_id}/test": 404,
    "GET /v1/webhooks/{webhook_id}/deliveries": 404,
    "POST /v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry": 404,
    "POST /v1/callback-secret": 200,
    "GET /healthz": 200,
    "GET /readyz": 200,
    "GET /metrics": 200,
    "POST /v1/uploads": 201,
    "HEAD /v1/uploads/{upload_id}": 200,
    "PATCH /v1/uploads/{upload_id}": 409,  # an upload's offset is state no schema can say
    "DELETE /v1/uploads/{upload_id}": 204,
}


def test_the_run_reached_every_operation(fuzz_run: FuzzRun, fuzz_schema: Any) -> None:
    labels = {result.ok().label for result in fuzz_schema.get_all_operations()}
    assert labels == set(REACHED), "the schema's operations changed: update REACHED"
    missing = {label: status for label, status in REACHED.items() if not fuzz_run.responses[label, status]}
    assert not missing, f"never answered: {missing}; got {sorted(fuzz_run.responses.items())}"
    # generated uploads reached the handler: stored (202) and refused by it (problem answers)
    uploads = {status for (label, status) in fuzz_run.responses if label == "POST /v1/jobs"}
    assert {202, 422} <= uploads, uploads


def route_of(path: str) -> str:
    return re.sub(r"^/v1/jobs/[^/]+", "/v1/jobs/{job_id}", path)


def test_every_v1_route_refused_missing_and_wrong_keys(fuzz_run: FuzzRun, harness: Harness) -> None:
    """ignored_auth's probes happened, on every /v1 route, and none got past (401 every time)."""
    probes = [e for e in harness.exchanges if e.path.startswith("/v1") and e.identity in ("none", "other")]
    let_through = [e for e in probes if e.status != 401]
    assert not let_through, let_through[:20]
    probed = {(route_of(e.path), e.identity) for e in probes}
    for route in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/processors"):
        assert (route, "none") in probed, f"no request without a key reached {route}"
        assert (route, "other") in probed, f"no request with a wrong key reached {route}"


def test_the_other_key_never_saw_a_job(fuzz_run: FuzzRun, harness: Harness) -> None:
    """object_level_authorization replayed alice's reads as bob; every one was refused."""
    bob = [e for e in harness.exchanges if e.identity == "bob" and JOB_PATH.match(e.path)]
    assert bob, "bob never replayed a read of alice's jobs"
    assert all(e.status == 404 for e in bob), bob


def test_no_request_reached_a_deleted_job(fuzz_run: FuzzRun, harness: Harness) -> None:
    """Use-after-free over every method (schemathesis' check looks at reads only): once a job's
    DELETE answered 204, nothing sent for that job succeeds."""
    deleted: set[str] = set()
    later: list[Exchange] = []
    for exchange in harness.exchanges:
        match = re.match(r"/v1/jobs/([^/]+)", exchange.path)
        if match is None:
            continue
        if match.group(1) in deleted and exchange.identity == "alice":
            later.append(exchange)
        if exchange.method == "DELETE" and exchange.status == 204:
            deleted.add(match.group(1))
    assert deleted, "the run deleted no job"
    assert later, "the run sent nothing for a job it had deleted (the stateful phase chains no DELETE)"
    reached = [e for e in later if e.status < 400]
    assert not reached, reached


# ---- explicit tests, each on its own app -----------------------------------------------------

CONFORMANCE = schemathesis.Config.from_dict(
    {
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
        }
    }
)


@dataclass
class Api:
    client: TestClient
    schema: Any
    raw: dict[str, Any]
    services: Services

    def check(self, response: Any, method: str, path: str, **parts: Any) -> None:
        """Validate ``response`` against the schema's ``method path`` (conformance checks only)."""
        case = self.schema[path][method].Case(**parts)
        case.validate_response(response)

    def submit(self, content: bytes = b"hello world\n", **data: str) -> dict[str, Any]:
        response = self.client.post("/v1/jobs", files={"file": ("hello.txt", content)}, data=data)
        assert response.status_code == 202, response.text
        self.check(response, "POST", "/v1/jobs")
        job: dict[str, Any] = response.json()
        return job


@pytest.fixture
def api(client: TestClient, services: Services) -> Api:
    _, secret = create_key(services.db, "schema-tests")
    client.headers["Authorization"] = f"Bearer {secret}"
    raw = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw, config=CONFORMANCE)
    return Api(client=client, schema=schema, raw=raw, services=services)


@pytest.mark.parametrize("state", ["queued", "cancelled"])
def test_a_deleted_job_is_404_on_every_endpoint(api: Api, state: str) -> None:
    """Use-after-free, explicitly: the schema has no links, and the fuzzer's inferred ones need luck
    to chain a DELETE and a read of the same job."""
    job = api.submit()
    job_id = job["id"]
    if state == "cancelled":
        assert api.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    etag = api.client.get(f"/v1/jobs/{job_id}").headers["ETag"]
    deleted = api.client.delete(f"/v1/jobs/{job_id}")
    assert deleted.status_code == 204, deleted.text
    api.check(deleted, "DELETE", "/v1/jobs/{job_id}", path_parameters={"job_id": job_id})

    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/v1/jobs/{job_id}", {}),
        ("GET", "/v1/jobs/{job_id}", {"params": {"wait": "0.2"}}),
        ("GET", "/v1/jobs/{job_id}", {"headers": {"If-None-Match": etag}}),
        ("GET", "/v1/jobs/{job_id}/result", {}),
        ("GET", "/v1/jobs/{job_id}/events", {}),
        ("POST", "/v1/jobs/{job_id}/cancel", {}),
        ("POST", "/v1/jobs/{job_id}/retry", {}),
        ("DELETE", "/v1/jobs/{job_id}", {}),
    ]
    for method, path, kwargs in attempts:
        response = api.client.request(method, path.format(job_id=job_id), **kwargs)
        assert response.status_code == 404, (method, path, kwargs, response.status_code, response.text)
        assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
        api.check(response, method, path, path_parameters={"job_id": job_id})

    listed = api.client.get("/v1/jobs", params={"limit": 500})
    assert job_id not in {item["id"] for item in listed.json()["items"]}
    api.check(listed, "GET", "/v1/jobs")


def allows(fragment: dict[str, Any], value: Any) -> bool:
    """Whether the schema fragment (JSON Schema 2020-12, as OpenAPI 3.1 uses) accepts ``value``."""
    return bool(jsonschema_rs.validator_for(fragment).is_valid(value))


def upload_schema(raw: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = raw["paths"]["/v1/jobs"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]
    return schema


def test_the_schema_declares_the_bearer_key(api: Api) -> None:
    """Without it, ignored_auth has nothing to check (it was missing: finding F, fixed)."""
    schemes = api.raw.get("components", {}).get("securitySchemes", {})
    bearer = {name for name, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"}
    assert bearer, schemes
    for path, item in api.raw["paths"].items():
        if path.startswith("/v1/"):
            for method, operation in item.items():
                required = operation.get("security", api.raw.get("security", []))
                assert any(set(r) & bearer for r in required), (method, path, required)


@pytest.mark.parametrize(
    ("path", "methods"), [("/v1/jobs", {"GET", "POST"}), ("/v1/jobs/{job_id}", {"GET", "DELETE"})]
)
def test_405_allow_names_every_method(api: Api, path: str, methods: set[str]) -> None:
    response = api.client.request("OPTIONS", path.format(job_id=api.submit()["id"]))
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")}
    assert methods <= allowed, response.headers.get("Allow")


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_idempotency_key_constraints_are_documented(api: Api, key: str) -> None:
    parameter = next(
        p
        for p in api.raw["paths"]["/v1/jobs"]["post"]["parameters"]
        if p["name"].lower() == "idempotency-key"
    )
    response = api.client.post(
        "/v1/jobs", files={"file": ("a.txt", b"abc")}, headers={"Idempotency-Key": key}
    )
    assert not allows(parameter["schema"], key) or response.status_code == 202, response.text


def test_upload_form_documents_only_its_fields(api: Api) -> None:
    response = api.client.post("/v1/jobs", files={"file": ("a.txt", b"abc")}, data={"note": "hello"})
    form = {"file": "abc", "note": "hello"}
    assert not allows(upload_schema(api.raw), form) or response.status_code == 202, response.text


@pytest.mark.parametrize("params", ["not json", "[]"])
def test_params_is_documented_as_a_json_object(api: Api, params: str) -> None:
    response = api.client.post("/v1/jobs", files={"file": ("a.txt", b"abc")}, data={"params": params})
    declared = upload_schema(api.raw)["properties"]["params"]
    assert not allows(declared, params) or response.status_code == 202, response.text


def test_an_empty_file_is_documented_as_invalid(api: Api) -> None:
    response = api.client.post("/v1/jobs", files={"file": ("a.txt", b"")})
    assert not allows(upload_schema(api.raw), {"file": ""}) or response.status_code == 202, response.text


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(out, "PNG")
    return out.getvalue()


def blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("processor", "name", "make"),
    [
        pytest.param("inspect", "a.txt", lambda: b"hello\n", id="inspect-json"),
        pytest.param("thumbnail", "a.png", png, id="thumbnail-webp"),
        pytest.param("pdf-text", "a.pdf", blank_pdf, id="pdf-text-txt"),
    ],
)
def test_results_have_documented_content_types(
    api: Api, worker: LocalWorker, processor: str, name: str, make: Callable[[], bytes]
) -> None:
    response = api.client.post("/v1/jobs", files={"file": (name, make())}, data={"processor": processor})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    worker.drain()
    result = api.client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200, result.text
    api.check(result, "GET", "/v1/jobs/{job_id}/result", path_parameters={"job_id": job_id})
