"""Content-addressed files per key, upload by hash, and result reuse (issue 19), on the local backend.

Stored once per (key, SHA-256): a second upload of the same content shares the first's bytes;
deleting a job deletes them only with the last job of that key that references them, and a crash
on either side of that commit neither loses a file in use nor leaks one past the orphan scan.

Here every upload is a file (``inline_upload_bytes=0``); the same for small uploads kept in the
database: tests/uploads/test_inline_uploads.py.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from filejobs import keys
from filejobs.jobs import files, repository
from filejobs.jobs.sweeper import remove_orphan_uploads
from filejobs.models import StoredFile, utcnow
from filejobs.services import Services
from filejobs.settings import Settings
from filejobs.storage import LocalUploadSink
from filejobs.testing import bearer, submit
from tests.conftest import burst_worker, make_settings
from tests.jobs.helpers import patch_job, row
from tests.sample_processors import Upper

CONTENT = b"the same scan, again and again\n"
SHA = hashlib.sha256(CONTENT).hexdigest()


def by_hash(
    client: TestClient, sha256: str = SHA, *, key: str | None = None, **fields: str
) -> httpx.Response:
    """POST /v1/jobs with ``file_sha256`` and no file part (a multipart form of text fields)."""
    parts: dict[str, Any] = {"file_sha256": (None, sha256), "file_name": (None, "scan.txt")}
    parts.update({name: (None, value) for name, value in fields.items()})
    return client.post("/v1/jobs", files=parts, headers=bearer(key))


def uploads(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "uploads").iterdir())


def stored_rows(services: Services) -> list[StoredFile]:
    with services.db.read() as session:
        return list(session.exec(select(StoredFile)).all())


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    # Reuse on (the service's default; the suite's is off); the timing test makes hundreds of requests.
    return make_settings(data_dir, rate_limit=0, reuse=True, inline_upload_bytes=0)


@pytest.fixture
def alice(services: Services) -> str:
    return keys.create_key(services.db, "alice")[1]


@pytest.fixture
def bob(services: Services) -> str:
    return keys.create_key(services.db, "bob")[1]


def test_the_same_content_is_stored_once_and_goes_with_its_last_job(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    first = submit(client, CONTENT)["id"]
    second = submit(client, CONTENT)["id"]
    assert row(services.db, second).storage_key == row(services.db, first).storage_key == f"uploads/{first}"
    assert uploads(data_dir) == [first]  # the second upload's own bytes went after its commit
    assert [(f.sha256, f.storage_key) for f in stored_rows(services)] == [(SHA, f"uploads/{first}")]

    assert client.delete(f"/v1/jobs/{first}").status_code == 204
    assert uploads(data_dir) == [first]  # still the second job's input
    burst_worker(services).drain()
    assert row(services.db, second).status == "succeeded"  # it read the shared bytes

    assert client.delete(f"/v1/jobs/{second}").status_code == 204
    assert uploads(data_dir) == []
    assert stored_rows(services) == []


def test_a_small_upload_of_content_known_stored_writes_no_bytes(
    client: TestClient, services: Services, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content this process saw committed for the key: the held file is never written (no temp
    file, no fsync, no rename, no delete after the commit); the job shares the stored bytes."""
    first = submit(client, CONTENT)["id"]
    assert len(services.committer.known) == 1
    opened: list[LocalUploadSink] = []
    real_open = LocalUploadSink._open

    def counted_open(sink: LocalUploadSink) -> int:
        opened.append(sink)
        return real_open(sink)

    monkeypatch.setattr(LocalUploadSink, "_open", counted_open)
    second = submit(client, CONTENT, processor="upper")["id"]
    assert opened == []
    assert row(services.db, second).storage_key == f"uploads/{first}"
    assert uploads(data_dir) == [first]
    assert list((data_dir / "tmp").iterdir()) == []
    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{second}/result").content == CONTENT.upper()
    other = submit(client, b"other content\n")["id"]  # unknown content: written as ever
    assert len(opened) == 1
    assert sorted(uploads(data_dir)) == sorted([first, other])


def test_content_known_but_deleted_since_is_written_after_all(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    """The process's memory of stored content is a hint: content deleted since (with its last job)
    makes the link fail in the row's transaction, and the upload is recorded with its own bytes."""
    first = submit(client, CONTENT)["id"]
    assert client.delete(f"/v1/jobs/{first}").status_code == 204
    assert uploads(data_dir) == []
    assert len(services.committer.known) == 1  # stale now
    second = submit(client, CONTENT, processor="upper")["id"]
    assert row(services.db, second).storage_key == f"uploads/{second}"
    assert uploads(data_dir) == [second]
    assert [(f.sha256, f.storage_key) for f in stored_rows(services)] == [(SHA, f"uploads/{second}")]
    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{second}/result").content == CONTENT.upper()


def test_upload_by_hash_makes_a_job_of_stored_content_else_asks_for_the_bytes(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    unknown = by_hash(client)
    assert unknown.status_code == 428
    assert unknown.json()["type"].endswith("/precondition-required")
    assert unknown.json()["send_file"] is True
    assert client.head(f"/v1/files/{SHA}").status_code == 404

    first = submit(client, CONTENT, processor="upper")["id"]
    head = client.head(f"/v1/files/{SHA}")
    assert head.status_code == 200
    assert head.headers["x-file-size"] == str(len(CONTENT))
    made = by_hash(client, processor="upper", reuse="false", file_size=str(len(CONTENT)))
    assert made.status_code == 202, made.text
    job = made.json()
    assert job["status"] == "queued"
    assert job["file"] == {
        "name": "scan.txt",
        "size": len(CONTENT),
        "sha256": SHA,
        "content_type": "text/plain",
    }
    assert row(services.db, job["id"]).storage_key == f"uploads/{first}"
    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{job['id']}/result").content == CONTENT.upper()
    assert uploads(data_dir) == [first]


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"file_sha256": "abc"}, 422),
        ({"file_sha256": "g" * 64}, 422),
        ({"file_sha256": SHA, "file_size": "12x"}, 422),
        ({"file_sha256": SHA, "reuse": "maybe"}, 422),
    ],
)
def test_bad_hash_fields_are_422(
    client: TestClient, data_dir: Path, fields: dict[str, str], status: int
) -> None:
    parts = {name: (None, value) for name, value in fields.items()}
    response = client.post("/v1/jobs", files=parts)
    assert response.status_code == status, response.text
    assert uploads(data_dir) == []


def test_a_file_that_does_not_match_its_hash_is_refused_and_nothing_is_stored(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    response = client.post(
        "/v1/jobs",
        files={"file": ("a.txt", CONTENT, "text/plain"), "file_sha256": (None, "0" * 64)},
    )
    assert response.status_code == 422, response.text
    assert uploads(data_dir) == []
    assert list((data_dir / "tmp").iterdir()) == []
    assert stored_rows(services) == []
    assert repository.count_queued(services.db) == 0


def test_another_key_learns_nothing_of_a_file_by_answer_or_timing(
    client: TestClient, services: Services, alice: str, bob: str
) -> None:
    submit(client, CONTENT, key=alice)
    assert client.head(f"/v1/files/{SHA}", headers=bearer(alice)).status_code == 200
    theirs = by_hash(client, key=bob)
    never_stored = by_hash(client, hashlib.sha256(b"nobody's").hexdigest(), key=bob)
    assert theirs.status_code == never_stored.status_code == 428
    assert theirs.json() == never_stored.json()
    assert client.head(f"/v1/files/{SHA}", headers=bearer(bob)).status_code == 404
    # The same upload by bob is his own content: stored again, under his key.
    bobs = submit(client, CONTENT, key=bob)["id"]
    assert row(services.db, bobs).storage_key == f"uploads/{bobs}"

    def head_time(sha256: str) -> float:
        start = time.perf_counter()
        assert client.head(f"/v1/files/{sha256}", headers=bearer(bob)).status_code in (200, 404)
        return time.perf_counter() - start

    alices_only = hashlib.sha256(b"alice's alone").hexdigest()
    submit(client, b"alice's alone", key=alice)
    unknown = hashlib.sha256(b"unknown").hexdigest()
    for _ in range(20):  # warm up
        head_time(alices_only), head_time(unknown)
    samples = [(head_time(alices_only), head_time(unknown)) for _ in range(200)]
    theirs_median = statistics.median(t for t, _ in samples)
    unknown_median = statistics.median(u for _, u in samples)
    # One primary-key lookup either way: the medians are within noise of each other.
    assert 0.75 < theirs_median / unknown_median < 1.33, (theirs_median, unknown_median)


def test_a_matching_succeeded_job_is_reused_without_running(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    first = submit(client, CONTENT, processor="upper")["id"]
    burst_worker(services).drain()
    source = row(services.db, first)
    assert source.status == "succeeded"
    assert source.attempts == 1

    again = submit(client, CONTENT, processor="upper")
    assert again["status"] == "succeeded"
    assert again["attempts"] == 0
    assert again["reused_from"] == first
    assert again["result"] == source.result
    assert again["progress"] == 1.0
    assert row(services.db, again["id"]).output_key == source.output_key
    assert client.get(f"/v1/jobs/{again['id']}/result").content == CONTENT.upper()
    assert uploads(data_dir) == [first]
    assert burst_worker(services).drain() == 0  # nothing to run

    by_hash_job = by_hash(client, processor="upper").json()
    assert by_hash_job["status"] == "succeeded"
    assert by_hash_job["reused_from"] == first

    # The source goes; the reused jobs keep the output they share; the last one takes it along.
    assert client.delete(f"/v1/jobs/{first}").status_code == 204
    assert client.get(f"/v1/jobs/{again['id']}/result").content == CONTENT.upper()
    assert client.delete(f"/v1/jobs/{again['id']}").status_code == 204
    assert (data_dir / "outputs" / first).exists()
    assert client.delete(f"/v1/jobs/{by_hash_job['id']}").status_code == 204
    assert not (data_dir / "outputs" / first).exists()
    assert uploads(data_dir) == []


@pytest.mark.parametrize("how", ["form", "other_params", "processor_version", "not_reusable"])
def test_reuse_is_skipped_when_asked_or_when_anything_differs(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    first = submit(client, CONTENT, processor="secretive", params={"token": "a"})["id"]
    burst_worker(services).drain()
    assert row(services.db, first).status == "succeeded"
    params = {"token": "b" if how == "other_params" else "a"}
    form = {"reuse": (None, "false")} if how == "form" else {}
    entry = services.registry.get("secretive")
    assert entry is not None
    if how == "processor_version":
        monkeypatch.setattr(entry.processor, "version", "2")
    if how == "not_reusable":
        monkeypatch.setattr(entry.processor, "reusable", False)
    response = client.post(
        "/v1/jobs",
        files={
            "file": ("a.txt", CONTENT, "text/plain"),
            "processor": (None, "secretive"),
            "params": (None, f'{{"token": "{params["token"]}"}}'),
            **form,
        },
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    assert response.json()["reused_from"] is None


def test_reuse_can_be_turned_off_for_the_service(tmp_path: Path) -> None:
    from filejobs.app import create_app
    from filejobs.jobs.dispatch import InMemoryDispatcher

    settings = make_settings(
        tmp_path / "data", reuse=False, inline_upload_bytes=0
    )  # as the service's FILEJOBS_REUSE=false
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services: Services = client.app_state["services"]
        first = submit(client, CONTENT, processor="upper")["id"]
        burst_worker(services).drain()
        assert row(services.db, first).status == "succeeded"
        assert submit(client, CONTENT, processor="upper")["status"] == "queued"


def test_a_source_removed_by_retention_is_not_reused(client: TestClient, services: Services) -> None:
    first = submit(client, CONTENT, processor="upper")["id"]
    burst_worker(services).drain()
    patch_job(services.db, first, finished_at=utcnow() - timedelta(days=30))
    garbage = repository.delete_finished(services.db, first, cutoff=utcnow() - timedelta(days=7))
    assert garbage is not None
    files.collect(services.storage, garbage)
    job = submit(client, CONTENT, processor="upper")
    assert job["status"] == "queued"
    assert job["reused_from"] is None
    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{job['id']}/result").content == CONTENT.upper()


def test_an_idempotency_key_still_answers_its_own_job(client: TestClient, services: Services) -> None:
    submit(client, CONTENT, processor="upper")
    burst_worker(services).drain()
    first = submit(client, CONTENT, processor="upper", idempotency_key="k-1")
    replay = client.post(
        "/v1/jobs",
        files={"file": ("hello.txt", CONTENT, "text/plain"), "processor": (None, "upper")},
        headers={"Idempotency-Key": "k-1"},
    )
    assert replay.status_code == 200
    assert replay.json()["id"] == first["id"]
    assert first["reused_from"] is not None


def test_a_crash_before_the_delete_commits_loses_nothing(
    client: TestClient, services: Services, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count of references and the row's delete are one transaction: dying in between (here:
    an exception after the count) leaves the row, its file and its ``files`` row."""
    job_id = submit(client, CONTENT)["id"]

    def crash(session: Any, job: Any) -> files.Garbage:
        files.release(session, job)
        raise RuntimeError("the process dies here")

    monkeypatch.setattr(repository, "release", crash)
    with pytest.raises(RuntimeError):
        repository.delete_job_releasing(services.db, job_id)
    monkeypatch.undo()
    assert row(services.db, job_id) is not None
    assert uploads(data_dir) == [job_id]
    assert len(stored_rows(services)) == 1
    assert remove_orphan_uploads(db=services.db, storage=services.storage, min_age=0) == 0
    assert uploads(data_dir) == [job_id]


def test_a_crash_after_the_delete_commits_leaks_only_until_the_orphan_scan(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    """Dying between the commit and the bytes' delete leaves bytes no row references: the orphan
    scan removes them past its grace, and never bytes a job still references."""
    kept = submit(client, b"another file\n", processor="upper")["id"]
    gone = submit(client, CONTENT, processor="upper")["id"]
    burst_worker(services).drain()
    repository.delete_job_releasing(services.db, gone)  # committed; its garbage never collected
    assert sorted(uploads(data_dir)) == sorted([kept, gone])
    assert remove_orphan_uploads(db=services.db, storage=services.storage, min_age=3600) == 0
    assert remove_orphan_uploads(db=services.db, storage=services.storage, min_age=0) == 1
    assert uploads(data_dir) == [kept]
    assert not (data_dir / "outputs" / gone).exists()
    assert (data_dir / "outputs" / kept).exists()
    assert client.get(f"/v1/jobs/{kept}/result").content == b"ANOTHER FILE\n"


def test_the_orphan_scan_keeps_a_shared_upload_whose_first_job_is_gone(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    first = submit(client, CONTENT)["id"]
    second = submit(client, CONTENT, processor="upper")["id"]
    repository.delete_job_releasing(services.db, first)
    assert remove_orphan_uploads(db=services.db, storage=services.storage, min_age=0) == 0
    assert uploads(data_dir) == [first]
    burst_worker(services).drain()
    assert row(services.db, second).status == "succeeded"


def test_the_built_in_processors_declare_a_version() -> None:
    from filejobs.processors.registry import BUILTIN, load_spec

    for spec in BUILTIN:
        assert "version" in vars(load_spec(spec)), spec
    assert Upper.version == "1"
    assert Upper.reusable


def test_a_reused_job_finishes_through_the_same_path_webhooks_and_metrics(
    client: TestClient, services: Services
) -> None:
    from prometheus_client import REGISTRY

    from filejobs.models import WebhookDelivery

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    services.settings.webhook_allow_http = True
    services.settings.webhook_allow_private = True
    hook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
    assert hook.status_code == 201, hook.text
    first = submit(client, CONTENT, processor="upper")["id"]
    burst_worker(services).drain()
    reused_before = sample("filejobs_jobs_reused_total", processor="upper")
    skipped_before = sample("filejobs_upload_skipped_bytes_total")

    reused = by_hash(client, processor="upper").json()
    assert reused["reused_from"] == first
    assert reused["notification"] == "pending"  # its webhook queued in the transaction that made it
    with services.db.read() as session:
        rows = session.exec(select(WebhookDelivery).where(WebhookDelivery.job_id == reused["id"])).all()
    assert [(row.event_type, row.status) for row in rows] == [("job.succeeded", "pending")]
    assert sample("filejobs_jobs_reused_total", processor="upper") == reused_before + 1
    assert sample("filejobs_upload_skipped_bytes_total") == skipped_before + len(CONTENT)


def test_a_finished_resumable_upload_shares_the_stored_content(
    client: TestClient, services: Services, data_dir: Path
) -> None:
    from tests.tus.helpers import created, patch

    first = submit(client, CONTENT)["id"]
    url = created(client, len(CONTENT), filename="again.txt", processor="upper", reuse="false")
    done = patch(client, url, 0, CONTENT)
    assert done.status_code == 204, done.text
    jobs = [job for job in client.get("/v1/jobs").json()["items"] if job["id"] != first]
    assert len(jobs) == 1
    assert row(services.db, jobs[0]["id"]).storage_key == f"uploads/{first}"
    assert uploads(data_dir) == [first]
    burst_worker(services).drain()
    assert client.get(f"/v1/jobs/{jobs[0]['id']}/result").content == CONTENT.upper()


def test_on_postgresql_links_and_deletes_racing_never_lose_a_file_in_use(tmp_path: Path) -> None:
    """Uploads by hash racing the deletes of the jobs that hold the content (PostgreSQL, row
    locks): every job left has its bytes, and once all are gone, so are the bytes."""
    import threading

    from filejobs.app import create_app
    from filejobs.jobs.dispatch import InMemoryDispatcher
    from tests.services import fresh_postgres_database

    with fresh_postgres_database() as url:
        settings = make_settings(
            tmp_path / "data", database_url=url, reuse=True, inline_upload_bytes=0, rate_limit=0
        )
        with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
            services: Services = client.app_state["services"]
            made = [submit(client, CONTENT)["id"]]
            lock = threading.Lock()
            errors: list[str] = []

            def linker() -> None:
                for _ in range(25):
                    answer = by_hash(client)
                    if answer.status_code == 202:
                        with lock:
                            made.append(answer.json()["id"])
                    elif answer.status_code == 428:  # every holder deleted meanwhile: send the bytes
                        with lock:
                            made.append(submit(client, CONTENT)["id"])
                    else:
                        errors.append(answer.text)

            def deleter() -> None:
                for _ in range(40):
                    with lock:
                        victim = made.pop(0) if len(made) > 1 else None
                    if victim is not None:
                        status = client.delete(f"/v1/jobs/{victim}").status_code
                        if status != 204:
                            errors.append(f"delete {status}")

            threads = [threading.Thread(target=linker) for _ in range(2)] + [threading.Thread(target=deleter)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert errors == []
            for job_id in made:
                assert (services.storage.root / row(services.db, job_id).storage_key).is_file()  # type: ignore[attr-defined]
            for job_id in made:
                assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
            assert uploads(tmp_path / "data") == []
            assert stored_rows(services) == []


def test_on_postgresql_a_delete_waits_for_a_link_in_flight_and_counts_it(tmp_path: Path) -> None:
    """The race itself, step by step: a job linking to the content holds its ``files`` row until it
    commits; deleting the content's last other job waits for that, then counts the new reference
    and keeps the bytes."""
    import threading

    from sqlalchemy import insert, text

    from filejobs.app import create_app
    from filejobs.ids import new_job_id
    from filejobs.jobs.dispatch import InMemoryDispatcher
    from filejobs.models import Job, new_job
    from tests.services import fresh_postgres_database

    with fresh_postgres_database() as url:
        settings = make_settings(tmp_path / "data", database_url=url, reuse=True, inline_upload_bytes=0)
        with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
            services: Services = client.app_state["services"]
            holder = row(services.db, submit(client, CONTENT)["id"])
            now = utcnow()
            values = new_job(
                **{**holder.model_dump(), "id": new_job_id(), "storage_key": "", "created_at": now}
            ).model_dump()
            outcome: list[files.Garbage] = []
            with services.db.write() as session:
                files.link(session, values, stored=False, reuse=False, now=now)  # the row locked
                session.execute(insert(Job.__table__), [values])  # type: ignore[attr-defined]
                deleting = threading.Thread(
                    target=lambda: outcome.append(repository.delete_job_releasing(services.db, holder.id)[1])
                )
                deleting.start()
                deadline = time.monotonic() + 10
                waiting = text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                # A transaction's view of pg_stat_activity is fixed at its first read: look from a
                # new one each time (one view taken before the delete reached its lock never saw it).
                while True:
                    with services.db.read_connection() as conn:
                        if conn.execute(waiting).scalar():
                            break
                    assert time.monotonic() < deadline, "the delete did not wait for the link"
                    time.sleep(0.01)
                assert outcome == []
            deleting.join(10)
            assert outcome[0].keys == []  # the new job's reference was counted: the bytes stay
            assert (services.storage.root / values["storage_key"]).is_file()  # type: ignore[attr-defined]
            assert values["storage_key"] == holder.storage_key
