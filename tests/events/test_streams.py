"""The event streams end to end: a real ``filejobs serve`` (no job workers: nothing changes behind
the test's back) and the test itself changing rows in the database, as a worker in another process
would. Every change therefore reaches the server through the database: SQLite's poll of changed
rows, or PostgreSQL's NOTIFY."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from filejobs import testing
from filejobs.api.routes.events import CATCH_UP_LIMIT
from filejobs.db import Database
from filejobs.keys import create_key, revoke_key
from filejobs.migrate import upgrade
from filejobs.settings import Settings
from filejobs.testing import Server
from tests.events import worker_writes
from tests.events.sse import Comment, Event, EventStream
from tests.jobs.helpers import make_job
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.services import fresh_postgres_database

READ = httpx.Timeout(20.0)


class Site:
    """A server and the database it runs on, as the test reaches both."""

    keys: dict[str, str]

    def __init__(self, server: Server, db: Database) -> None:
        self.server = server.start()
        self.db = db
        self.client = server.client()

    def submit(self, key: str | None = None, name: str = "a.txt") -> dict[str, Any]:
        return testing.submit(self.client, b"hello\n", name=name, key=key)

    @contextlib.contextmanager
    def stream(self, path: str, key: str | None = None, **headers: str) -> Iterator[EventStream]:
        with self.client.stream("GET", path, headers={**auth(key), **headers}, timeout=READ) as response:
            yield EventStream(response)

    def claim(self, job_id: str) -> None:
        worker_writes.claim(self.db, job_id)

    def progress(self, job_id: str, value: float) -> None:
        worker_writes.progress(self.db, job_id, value)

    def succeed(self, job_id: str) -> None:
        worker_writes.succeed(self.db, job_id)


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


SiteFactory = Callable[..., Site]


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[SiteFactory]:
    made: list[Site] = []

    def make(database_url: str | None = None, keys: tuple[str, ...] = (), **env: Any) -> Site:
        data_dir = tmp_path / f"data{len(made)}"
        values = {
            "FILEJOBS_WORKERS": "0",
            "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS),
            "FILEJOBS_EVENTS_POLL_INTERVAL": "0.05",
            **{f"FILEJOBS_{name.upper()}": str(value) for name, value in env.items()},
        }
        if database_url:
            values["FILEJOBS_DATABASE_URL"] = database_url
        settings = Settings(data_dir=data_dir, database_url=database_url)
        data_dir.mkdir(parents=True)
        upgrade(settings.resolved_database_url)
        db = Database(settings.resolved_database_url)
        made_keys = {name: create_key(db, name)[1] for name in keys}
        site = Site(Server(data_dir, env=values, log_path=tmp_path / f"server{len(made)}.log"), db)
        site.keys = made_keys
        made.append(site)
        return site

    try:
        yield make
    finally:
        for site in made:
            site.client.close()
            site.server.stop()
            site.db.dispose()
        for site in made:
            print(f"----- {site.server.log_path.name} (tail) -----\n{site.server.log_tail(40)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, make_site: SiteFactory) -> Iterator[Site]:
    if request.param == "sqlite":
        yield make_site()
        return
    with fresh_postgres_database() as url:
        yield make_site(url)


def job_events(events: list[Event]) -> list[tuple[int, str, float]]:
    return [(e.json()["version"], e.json()["status"], e.json()["progress"]) for e in events]


# ---- one job ---------------------------------------------------------------------------------


def test_a_job_stream_has_every_change_in_order_and_ends_after_the_final_one(site: Site) -> None:
    job = site.submit()
    with site.stream(f"/v1/jobs/{job['id']}/events") as stream:
        assert stream.response.headers["cache-control"] == "no-cache"
        first = stream.event()
        assert (first.event, first.id, first.json()["status"]) == ("job", "1", "queued")
        assert stream.retry == 2000
        site.claim(job["id"])
        running = stream.event()
        assert (running.id, running.json()["status"]) == ("2", "running")
        site.progress(job["id"], 0.5)
        assert stream.event().json()["progress"] == 0.5
        site.succeed(job["id"])
        rest = stream.rest()  # the stream ends by itself after the final event
    assert job_events(rest) == [(4, "succeeded", 1.0)]
    assert rest[0].id == "4"
    assert rest[0].json() == site.client.get(f"/v1/jobs/{job['id']}").json()


def test_last_event_id_resumes_and_a_finished_job_answers_204(site: Site) -> None:
    job = site.submit()
    path = f"/v1/jobs/{job['id']}/events"
    with site.stream(path) as stream:
        assert stream.event().id == "1"
    site.claim(job["id"])
    site.progress(job["id"], 0.25)
    with site.stream(path, **{"Last-Event-ID": "1"}) as stream:
        resumed = stream.event()  # the current state, not what was missed change by change
        assert (resumed.id, resumed.json()["status"], resumed.json()["progress"]) == ("3", "running", 0.25)
        site.succeed(job["id"])
        assert [e.id for e in stream.rest()] == ["4"]
    with site.stream(path, **{"Last-Event-ID": "3"}) as stream:  # missed only the final event
        assert [e.id for e in stream.rest()] == ["4"]
    response = site.client.get(path, headers={"Last-Event-ID": "4"})
    assert response.status_code == 204, response.text  # an EventSource stops reconnecting
    with site.stream(path) as stream:  # a new follower of a finished job gets its state, then the end
        assert [e.id for e in stream.rest()] == ["4"]


def test_a_deleted_job_ends_its_stream_with_a_deleted_event(make_site: SiteFactory) -> None:
    site = make_site()
    job = site.submit()
    with site.stream(f"/v1/jobs/{job['id']}/events") as stream:
        assert stream.event().id == "1"
        assert site.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
        rest = stream.rest()
    assert [(e.event, e.json()) for e in rest] == [("deleted", {"id": job["id"]})]


def test_bad_requests_get_problems(make_site: SiteFactory) -> None:
    site = make_site()
    job = site.submit()
    for path in (f"/v1/jobs/{job['id']}/events", "/v1/events"):
        response = site.client.get(path, headers={"Last-Event-ID": "yesterday"})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "Last-Event-ID" in response.json()["detail"]
    missing = site.client.get("/v1/jobs/01a24200-0000-7000-8000-000000000000/events")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_an_idle_stream_sends_keep_alive_comments(make_site: SiteFactory) -> None:
    site = make_site(events_heartbeat=0.2)
    job = site.submit()
    with site.stream(f"/v1/jobs/{job['id']}/events") as stream:
        assert stream.event().id == "1"
        assert next(stream) == Comment("keep-alive")
        assert next(stream) == Comment("keep-alive")
    with site.stream("/v1/events") as stream:
        first = next(stream)
        if isinstance(first, Event) and first.event == "job":
            # On a loaded machine: the job made before the stream opened, which the feed's look
            # back saw only after the stream subscribed (as in wait_for_a_place).
            assert job["id"] in first.data
            first = next(stream)
        assert first == Comment("keep-alive")


def wait_for_a_place(site: Site, key: str | None = None) -> None:
    """Open ``/v1/events`` until the server has a place again (once it has seen earlier streams'
    disconnects), within 10 s."""
    deadline = time.monotonic() + 10
    while True:
        with site.client.stream("GET", "/v1/events", headers=auth(key), timeout=READ) as response:
            if response.status_code == 200:
                # Open: a keep-alive, or (on a loaded machine) a job of the key's made before the
                # stream opened, which the feed's poll saw only after it subscribed.
                first = next(EventStream(response))
                assert first == Comment("keep-alive") or (isinstance(first, Event) and first.event == "job")
                return
            assert response.status_code in (429, 503)
            assert time.monotonic() < deadline
        time.sleep(0.02)


def assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == status


def test_streams_beyond_the_limit_get_503(make_site: SiteFactory) -> None:
    site = make_site(max_event_streams=2, events_heartbeat=0.2)
    with site.stream("/v1/events") as one, site.stream("/v1/events") as two:
        next(one), next(two)  # both streams are open on the server
        assert_refused(site.client.get("/v1/events"), 503)
    wait_for_a_place(site)  # closing them frees their places


def test_one_key_cannot_take_every_stream(make_site: SiteFactory) -> None:
    """Past MAX_EVENT_STREAMS_PER_KEY a key gets 429 (its own doing), while other keys still get
    streams; the anonymous caller of an open service has only the process's limit."""
    site = make_site(keys=("alice", "bob"), max_event_streams_per_key=2, events_heartbeat=0.2)
    alice, bob = site.keys["alice"], site.keys["bob"]
    job = site.submit(alice)
    with (
        site.stream("/v1/events", alice) as one,
        site.stream(f"/v1/jobs/{job['id']}/events", alice) as two,
    ):
        next(one), two.event()  # both streams are open on the server
        assert_refused(site.client.get("/v1/events", headers=auth(alice)), 429)
        assert_refused(site.client.get(f"/v1/jobs/{job['id']}/events", headers=auth(alice)), 429)
        with site.stream("/v1/events", bob) as theirs:
            assert next(theirs) == Comment("keep-alive")
    wait_for_a_place(site, alice)

    open_site = make_site(max_event_streams_per_key=1, events_heartbeat=0.2)
    with open_site.stream("/v1/events") as one, open_site.stream("/v1/events") as two:
        assert next(one) == next(two) == Comment("keep-alive")


def test_revoking_a_key_ends_its_streams(make_site: SiteFactory) -> None:
    """``filejobs keys revoke`` writes the database from another process; the server ends that
    key's open streams within EVENTS_KEY_CHECK, and only that key's."""
    site = make_site(keys=("alice", "bob"), events_key_check=0.1, events_heartbeat=60)
    alice, bob = site.keys["alice"], site.keys["bob"]
    job = site.submit(alice)
    with (
        site.stream("/v1/events", alice) as everything,
        site.stream(f"/v1/jobs/{job['id']}/events", alice) as one_job,
        site.stream("/v1/events", bob) as theirs,
    ):
        assert one_job.event().id == "1"
        revoke_key(site.db, "alice")
        # Both end (no keep-alive for 60 s: a stream left open fails on the read timeout, 20 s);
        # /v1/events may first send the job made just before it opened.
        assert {event.json()["id"] for event in everything.rest()} <= {job["id"]}
        assert one_job.rest() == []
        site.submit(bob)  # bob's stream goes on
        assert theirs.event().json()["status"] == "queued"
    refused = site.client.get("/v1/events", headers=auth(alice))
    assert refused.status_code == 401


def test_a_first_key_ends_the_anonymous_streams(make_site: SiteFactory) -> None:
    site = make_site(events_key_check=0.1, events_heartbeat=60)
    with site.stream("/v1/events") as stream:
        create_key(site.db, "alice")
        assert stream.rest() == []
    assert site.client.get("/v1/events").status_code == 401


# ---- all of a caller's jobs ------------------------------------------------------------------


def test_each_key_hears_only_of_its_own_jobs(make_site: SiteFactory) -> None:
    site = make_site(keys=("alice", "bob"))
    alice, bob = site.keys["alice"], site.keys["bob"]
    with site.stream("/v1/events", alice) as stream:
        theirs = site.submit(bob)
        mine = site.submit(alice)
        for job in (theirs, mine):
            site.claim(job["id"])
            site.succeed(job["id"])
        seen: list[Event] = []
        while not any(e.json()["status"] == "succeeded" for e in seen):
            seen.append(stream.event())
    assert {e.json()["id"] for e in seen} == {mine["id"]}
    statuses = [e.json()["status"] for e in seen]  # a change the feed saw merged with the next may
    assert statuses[0] == "queued"
    assert statuses[-1] == "succeeded"
    assert [e.json()["version"] for e in seen] == sorted({e.json()["version"] for e in seen})
    assert site.client.get(f"/v1/jobs/{theirs['id']}/events", headers=auth(alice)).status_code == 404
    assert site.client.get(f"/v1/jobs/{mine['id']}/events").status_code == 401
    assert site.client.get("/v1/events", headers=auth("fj_not-a-key")).status_code == 401


def test_all_events_resume_with_what_changed_meanwhile(site: Site) -> None:
    first = site.submit(name="first.txt")
    with site.stream("/v1/events") as stream:
        second = site.submit(name="second.txt")
        event = stream.event()
        while event.json()["id"] != second["id"]:
            event = stream.event()
        last_id = event.id
    assert last_id is not None
    assert last_id.isdigit()
    site.claim(first["id"])  # while nobody listened
    third = site.submit(name="third.txt")
    with site.stream("/v1/events", **{"Last-Event-ID": last_id}) as stream:
        caught_up: dict[str, Event] = {}
        while not {first["id"], third["id"]} <= caught_up.keys():
            event = stream.event()
            caught_up[event.json()["id"]] = event
        assert caught_up[first["id"]].json()["status"] == "running"
        assert caught_up[third["id"]].json()["status"] == "queued"
        ids = [int(event.id or 0) for event in caught_up.values()]
        assert ids == sorted(ids)
        assert ids[0] >= int(last_id)
        site.succeed(first["id"])  # and then it goes on live
        event = stream.event()
        while event.json()["id"] != first["id"]:
            event = stream.event()
        assert event.json()["status"] == "succeeded"


def test_a_stream_on_one_api_process_sees_jobs_run_by_another(make_site: SiteFactory, tmp_path: Path) -> None:
    """Two `filejobs serve` processes on one data directory: the stream is held by one without job
    workers, the upload goes to the other, which runs it."""
    watcher = make_site()
    runner = Server(
        watcher.server.data_dir,
        env={"FILEJOBS_WORKERS": "1", "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS)},
        log_path=tmp_path / "runner.log",
    ).start()
    try:
        with watcher.stream("/v1/events") as stream, runner.client() as client:
            response = client.post("/v1/jobs", files={"file": ("b.txt", b"x" * 10, "text/plain")})
            assert response.status_code == 202
            job_id = response.json()["id"]
            statuses: list[str] = []
            while "succeeded" not in statuses:
                event = stream.event()
                if event.json()["id"] == job_id:
                    statuses.append(event.json()["status"])
        assert statuses[-1] == "succeeded"
        assert statuses == sorted(statuses, key=["queued", "running", "succeeded"].index)
    finally:
        runner.stop()


def test_sigterm_ends_open_streams_cleanly(make_site: SiteFactory) -> None:
    """A stopping server ends its streams at once, with a proper end of the response (clients
    reconnect elsewhere with Last-Event-ID), instead of having them cut when the graceful shutdown
    times out, which would leave each client a broken chunked response."""
    site = make_site()
    job = site.submit()
    with site.stream("/v1/events") as every, site.stream(f"/v1/jobs/{job['id']}/events") as one:
        assert one.event().id == "1"
        site.server.terminate()
        assert one.rest() == []  # no exception: the response ended properly
        every.rest()
    assert site.server.wait(10) == 0


def test_a_resume_after_too_many_changes_says_reset(make_site: SiteFactory) -> None:
    """More than 500 of the caller's jobs changed since Last-Event-ID: one ``reset`` event (list
    again) instead of them all; then the stream goes on live."""
    site = make_site()
    first = site.submit()
    with site.stream("/v1/events") as stream:
        second = site.submit()
        event = stream.event()
        while event.json()["id"] != second["id"]:
            event = stream.event()
    assert event.id is not None
    with site.db.write() as session:
        session.add_all([make_job() for _ in range(CATCH_UP_LIMIT + 1)])
    with site.stream("/v1/events", **{"Last-Event-ID": event.id}) as stream:
        reset = stream.event()
        assert (reset.event, reset.json()) == ("reset", {})
        assert reset.id is not None
        assert int(reset.id) >= int(event.id)
        site.claim(first["id"])
        seen: list[dict[str, Any]] = []  # (a change of the seconds before may come first)
        while not seen or seen[-1]["status"] != "running":
            live = stream.event().json()
            if live["id"] == first["id"]:
                seen.append(live)
        assert [job["version"] for job in seen] == sorted({job["version"] for job in seen})
