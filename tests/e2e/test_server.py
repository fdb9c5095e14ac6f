"""End-to-end: a real ``filejobs serve`` process, real HTTP, real signals.

Every wait is bounded and on a real condition (a long-poll on the job, a process exiting); every
process a test starts is killed in the fixture's teardown, and the server log's tail is printed
there (pytest shows it when the test failed).
"""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from filejobs.testing import (
    Server,
    ServerFactory,
    finished,
    server_factory,
    status_is,
    submit,
    wait_for,
    wait_gone,
)
from filejobs.testing.s3 import S3Bucket
from tests.sample_processors import ALL as TEST_PROCESSORS

pytestmark = pytest.mark.e2e


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def storage_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The storage backend's settings: none (the data directory), or, parametrized indirectly with
    "s3", a test bucket on moto's S3 server."""
    if getattr(request, "param", "local") == "s3":
        bucket: S3Bucket = request.getfixturevalue("s3_bucket")
        return bucket.env
    return {}


#: Runs a test on both storage backends.
BOTH_BACKENDS = pytest.mark.parametrize("storage_env", ["local", "s3"], indirect=True)


@pytest.fixture
def start_server(tmp_path: Path, data_dir: Path, storage_env: dict[str, str]) -> Iterator[ServerFactory]:
    """``start_server(**FILEJOBS_ENV)`` → a started :class:`Server` on ``data_dir``; the servers a
    test started are all killed at teardown, and their logs printed."""
    defaults = {
        "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS),
        "FILEJOBS_WORKERS": "1",
        **storage_env,
    }
    with server_factory(tmp_path, data_dir, defaults) as start:
        yield start


def db_rows(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The jobs table as the process left it (read-only, after the server exited)."""
    with sqlite3.connect(f"file:{data_dir / 'filejobs.db'}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in conn.execute("SELECT * FROM jobs")}


def worker_children(server: Server) -> list[psutil.Process]:
    children = server.children()
    workers = [p for p in children if "filejobs.jobs.child" in " ".join(p.cmdline())]
    assert workers, f"no worker child under the server: {[p.cmdline() for p in children]}"
    return children


# ---- the happy path -------------------------------------------------------------------------


@BOTH_BACKENDS
def test_upload_wait_and_download(start_server: ServerFactory) -> None:
    server = start_server()
    content = b"one two\nthree\n"
    with server.client() as client:
        job = submit(client, content)
        assert job["status"] in ("queued", "running", "succeeded")
        done = wait_for(client, job["id"], finished, timeout=30)
        assert done["status"] == "succeeded", done
        assert done["file"]["sha256"] == hashlib.sha256(content).hexdigest()
        result = client.get(f"/v1/jobs/{job['id']}/result")
        assert result.status_code == 200
        assert result.json()["words"] == 3

        upper = submit(client, content, processor="upper")
        assert wait_for(client, upper["id"], finished, timeout=30)["status"] == "succeeded"
        download = client.get(f"/v1/jobs/{upper['id']}/result")
        assert download.status_code == 200
        assert download.content == content.upper()
        assert "attachment" in download.headers["Content-Disposition"]


# ---- kill -9 ----------------------------------------------------------------------------------


@BOTH_BACKENDS
def test_kill9_loses_nothing_and_the_worker_child_dies_too(start_server: ServerFactory) -> None:
    env = {"lease_seconds": 2, "sweep_interval": 0.5, "workers": 1, "retry_backoff": 0}
    first = start_server(**env)
    with first.client() as client:
        victim = submit(client, processor="sleep", params={"seconds": 3, "steps": 30})
        running = wait_for(client, victim["id"], status_is("running"), timeout=20)
        assert running["attempts"] == 1
        # workers=1: these wait behind the sleeping job and are queued when the server dies.
        waiting = [submit(client, f"file {i}\n".encode()) for i in range(4)]
        for job in waiting:
            assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    children = worker_children(first)

    first.kill9()
    assert first.returncode == -signal.SIGKILL
    survivors = wait_gone(children, timeout=5)
    assert not survivors, f"worker processes outlived the server: {[p.pid for p in survivors]}"

    second = start_server(**env)
    with second.client() as client:
        done = wait_for(client, victim["id"], finished, timeout=20)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["result"]["pid"] not in {p.pid for p in children}
        for job in waiting:
            other = wait_for(client, job["id"], finished, timeout=20)
            assert other["status"] == "succeeded", other
            assert other["attempts"] == 1
        listed = client.get("/v1/jobs", params={"limit": 500}).json()["items"]
        assert {j["id"] for j in listed} == {victim["id"], *(j["id"] for j in waiting)}


# ---- SIGTERM ------------------------------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish_and_leaves_the_queue_alone(
    start_server: ServerFactory, data_dir: Path
) -> None:
    server = start_server(shutdown_grace=10, workers=1)
    with server.client() as client:
        running = submit(client, processor="sleep", params={"seconds": 2, "steps": 20})
        wait_for(client, running["id"], status_is("running"), timeout=20)
        behind = submit(client, processor="sleep", params={"seconds": 0.1, "steps": 1})  # workers=1
        assert client.get(f"/v1/jobs/{behind['id']}").json()["status"] == "queued"
    children = worker_children(server)

    started = time.monotonic()
    server.terminate()
    code = server.wait(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code}"
    assert elapsed < 20
    assert not wait_gone(children, timeout=5)

    rows = db_rows(data_dir)
    assert rows[running["id"]]["status"] == "succeeded"
    assert rows[running["id"]]["attempts"] == 1
    assert rows[behind["id"]]["status"] == "queued"
    assert rows[behind["id"]]["attempts"] == 0

    # Nothing is lost: a server with no workers still shows both as the database has them.
    idle = start_server(workers=0)
    with idle.client() as client:
        assert client.get(f"/v1/jobs/{running['id']}").json()["status"] == "succeeded"
        assert client.get(f"/v1/jobs/{behind['id']}").json()["status"] == "queued"


def test_sigterm_grace_shorter_than_the_job_returns_it_to_the_queue(
    start_server: ServerFactory, data_dir: Path
) -> None:
    server = start_server(shutdown_grace=0.5, workers=1)
    with server.client() as client:
        job = submit(client, processor="sleep", params={"seconds": 3, "steps": 30})
        wait_for(client, job["id"], status_is("running"), timeout=20)
    children = worker_children(server)

    server.terminate()
    code = server.wait(timeout=30)
    assert code == 0, f"exit code {code}"
    assert not wait_gone(children, timeout=5)
    row = db_rows(data_dir)[job["id"]]
    assert row["status"] == "queued"
    assert row["attempts"] == 0
    assert row["lease_owner"] is None

    again = start_server(workers=1)
    with again.client() as client:
        done = wait_for(client, job["id"], finished, timeout=20)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1


# ---- load ---------------------------------------------------------------------------------------

UPLOADERS = 50
UPLOADS_EACH = 10


@BOTH_BACKENDS
def test_concurrent_uploaders(start_server: ServerFactory) -> None:
    server = start_server(workers=2)
    results: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    go = threading.Barrier(UPLOADERS)

    def uploader(index: int) -> None:
        try:
            with server.client(timeout=60.0) as client:
                go.wait(timeout=30)
                for n in range(UPLOADS_EACH):
                    content = f"uploader {index} file {n}\n".encode() * (n + 1)
                    response = client.post(
                        "/v1/jobs", files={"file": (f"u{index}-{n}.txt", content, "text/plain")}
                    )
                    job_id = response.json().get("id", "") if response.status_code == 202 else ""
                    with lock:
                        results.append((response.status_code, job_id))
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(UPLOADERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "uploaders did not finish within 120 s"
    assert not errors, errors[:3]

    codes = [code for code, _ in results]
    assert len(results) == UPLOADERS * UPLOADS_EACH
    assert not [c for c in codes if c >= 500], sorted(set(codes))
    assert set(codes) == {202}
    ids = {job_id for _, job_id in results}
    assert len(ids) == UPLOADERS * UPLOADS_EACH
    assert "database is locked" not in server.log_text()

    with server.client() as client:
        for job_id in ids:
            assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        listed: set[str] = set()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/jobs", params=params).json()
            listed.update(j["id"] for j in page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert listed == ids
    assert "database is locked" not in server.log_text()
