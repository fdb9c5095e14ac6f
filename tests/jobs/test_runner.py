"""``run_job`` end to end: upload through the API, run in burst mode, look at the row and files."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from filejobs.app import create_app
from filejobs.jobs import inline_uploads, repository
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.jobs.runner import Ran, run_job
from filejobs.jobs.worker import LocalWorker
from filejobs.models import JobStatus, utcnow
from filejobs.services import Services
from filejobs.settings import Settings
from filejobs.testing import submit
from tests.conftest import burst_worker, files_under, make_settings
from tests.jobs.conftest import App
from tests.jobs.helpers import child_pids, patch_job, process_gone, row, wait_for_status, wait_until
from tests.uploads.helpers import stored_content


def get(client: TestClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def job_files(data_dir: Path, job_id: str) -> list[Path]:
    return [path for path in files_under(data_dir) if job_id in path.as_posix()]


def output_files(data_dir: Path, job_id: str) -> list[Path]:
    return [path for path in job_files(data_dir, job_id) if "outputs" in path.parts]


class Background:
    """Runs ``worker.drain()`` in a thread; ``join`` fails the test if it does not return in time."""

    def __init__(self, worker: LocalWorker) -> None:
        self.ran: int | None = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
        self._thread.start()

    def _run(self, worker: LocalWorker) -> None:
        try:
            self.ran = worker.drain()
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def join(self, timeout: float) -> int:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"drain() did not return within {timeout} s"
        assert self.error is None, self.error
        assert self.ran is not None
        return self.ran


@pytest.fixture
def own_app(data_dir: Path, app_builder: Callable[..., App]) -> Callable[..., App]:
    """Build an app with custom settings: ``own_app(**overrides)`` → (client, services, worker)."""
    return partial(app_builder, data_dir)


# ---- outcomes -------------------------------------------------------------------------------


def test_inspect_text(client: TestClient, worker: LocalWorker) -> None:
    content = b"The quick brown fox\njumps over\n\nthe lazy dog"
    job_id = submit(client, content)["id"]
    assert worker.drain() == 1
    body = get(client, job_id)
    assert body["status"] == "succeeded"
    assert body["attempts"] == 1
    assert body["progress"] == 1.0
    assert body["error"] is None
    assert body["started_at"] is not None
    assert body["finished_at"] is not None
    result = body["result"]
    assert result["size"] == len(content)
    assert result["sha256"] == hashlib.sha256(content).hexdigest()
    assert result["md5"] == hashlib.md5(content).hexdigest()
    assert result["is_text"] is True
    assert result["lines"] == 4  # three newlines plus an unterminated last line
    assert result["words"] == 9
    assert body["file"]["sha256"] == result["sha256"]
    # No output file: the result endpoint answers the JSON result.
    answer = client.get(f"/v1/jobs/{job_id}/result")
    assert answer.status_code == 200
    assert answer.json() == result


def test_inspect_binary(client: TestClient, worker: LocalWorker) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB, more than one read chunk
    job_id = submit(client, content, name="blob.bin", content_type="application/octet-stream")["id"]
    assert worker.drain() == 1
    body = get(client, job_id)
    assert body["status"] == "succeeded"
    result = body["result"]
    assert result["is_text"] is False
    assert result["size"] == len(content)
    assert result["sha256"] == hashlib.sha256(content).hexdigest()
    assert result["md5"] == hashlib.md5(content).hexdigest()
    assert "lines" not in result
    assert "words" not in result


def test_upper_output_is_downloadable(client: TestClient, worker: LocalWorker, data_dir: Path) -> None:
    job_id = submit(client, b"shout this\n", name="notes.txt", processor="upper")["id"]
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409  # not yet
    assert worker.drain() == 1
    body = get(client, job_id)
    assert body["status"] == "succeeded"
    assert body["result"] == {"bytes": len(b"shout this\n")}
    answer = client.get(f"/v1/jobs/{job_id}/result")
    assert answer.status_code == 200
    assert answer.content == b"SHOUT THIS\n"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert "notes.txt.upper.txt" in disposition
    assert answer.headers["content-type"].startswith("text/plain")
    outputs = [p for p in job_files(data_dir, job_id) if "outputs" in p.parts]
    assert [p.relative_to(data_dir).as_posix() for p in outputs] == [f"outputs/{job_id}/1/upper.txt"]


def test_a_job_that_writes_no_file_makes_no_output_directory(
    client: TestClient, worker: LocalWorker, data_dir: Path
) -> None:
    job_id = submit(client, b"nothing to write\n")["id"]
    assert worker.drain() == 1
    assert get(client, job_id)["status"] == "succeeded"
    assert not (data_dir / "outputs" / job_id).exists()  # made only when the processor asks for it


def test_fail_records_the_error(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(client, processor="fail", params={"code": "bad_page", "message": "page 3 is unreadable"})[
        "id"
    ]
    assert worker.drain() == 1
    body = get(client, job_id)
    assert body["status"] == "failed"
    assert body["error"] == {"code": "bad_page", "message": "page 3 is unreadable"}
    assert body["attempts"] == 1  # not retryable: one attempt, although three are allowed
    assert body["finished_at"] is not None
    assert body["result"] is None
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409


def test_retryable_failure_is_retried_until_attempts_are_spent(
    client: TestClient, worker: LocalWorker, settings: Settings
) -> None:
    assert settings.max_attempts == 3
    job_id = submit(client, processor="fail", params={"code": "busy", "message": "later", "retryable": True})[
        "id"
    ]
    assert worker.drain() == settings.max_attempts
    body = get(client, job_id)
    assert body["status"] == "failed"
    assert body["attempts"] == settings.max_attempts
    assert body["error"] == {"code": "busy", "message": "later"}
    assert worker.drain() == 0  # nothing left to run


def test_run_job_says_when_a_retried_or_early_job_is_due(data_dir: Path) -> None:
    """The caller schedules a retry from what run_job returns (no re-read), and a job delivered
    before it is due is not claimed and comes back with when it will be."""
    settings = make_settings(data_dir, retry_backoff=60.0, retry_backoff_max=60.0)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services = client.app_state["services"]
        job_id = submit(client, processor="fail", params={"code": "busy", "retryable": True})["id"]
        ctx = burst_worker(services).context(0)
        try:
            ran = run_job(job_id, ctx)
            assert ran.status is JobStatus.queued
            assert ran.due_at is not None
            assert ran.due_at.replace(tzinfo=None) == row(services.db, job_id).run_after.replace(tzinfo=None)
            early = run_job(job_id, ctx)
            assert early.status is None
            assert early.due_at is not None
            assert early.due_at.replace(tzinfo=None) == ran.due_at.replace(tzinfo=None)
            assert row(services.db, job_id).attempts == 1
            done = submit(client, processor="inspect")["id"]
            assert run_job(done, ctx) == Ran(JobStatus.succeeded)
            assert run_job(done, ctx) == Ran(None)  # finished: nothing to schedule
        finally:
            ctx.child.kill()


def test_a_job_that_came_due_after_its_refused_claim_is_offered_again(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim just before the job's ``run_after`` is refused; if the job is due by the time
    run_job reads when it will be (a timer fired at the due instant), it comes back at once
    instead of never (the worker's timer was the only thing that would offer it)."""
    settings = make_settings(data_dir)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services = client.app_state["services"]
        job_id = submit(client, processor="inspect")["id"]
        patch_job(services.db, job_id, run_after=utcnow() + timedelta(hours=1))
        ctx = burst_worker(services).context(0)
        real_get_job = repository.get_job

        def read_after_it_came_due(db: Any, wanted: str) -> Any:
            patch_job(services.db, job_id, run_after=utcnow() - timedelta(seconds=1))  # time passed
            return real_get_job(db, wanted)

        try:
            with monkeypatch.context() as patch:
                patch.setattr(repository, "get_job", read_after_it_came_due)
                refused = run_job(job_id, ctx)
            assert refused.status is None
            assert refused.due_at is not None
            assert refused.due_at.replace(tzinfo=None) <= utcnow().replace(tzinfo=None)
            assert row(services.db, job_id).status == "queued"
            assert run_job(job_id, ctx) == Ran(JobStatus.succeeded)
        finally:
            ctx.child.kill()


def test_flaky_succeeds_on_second_attempt(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(client, processor="flaky", params={"succeed_on": 2})["id"]
    assert worker.drain() == 2
    body = get(client, job_id)
    assert body["status"] == "succeeded"
    assert body["attempts"] == 2
    assert body["result"] == {"attempt": 2}
    assert body["error"] is None  # the first attempt's error is not the job's


def test_flaky_crash_is_retried_then_succeeds(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(client, processor="flaky", params={"succeed_on": 2, "crash": True})["id"]
    assert worker.drain() == 2
    body = get(client, job_id)
    assert body["status"] == "succeeded"
    assert body["attempts"] == 2
    assert body["result"] == {"attempt": 2}


def test_crash_fails_after_max_attempts(client: TestClient, worker: LocalWorker, settings: Settings) -> None:
    job_id = submit(client, processor="crash")["id"]
    assert worker.drain() == settings.max_attempts
    body = get(client, job_id)
    assert body["status"] == "failed"
    assert body["attempts"] == settings.max_attempts
    assert body["error"]["code"] == "worker_crashed"
    assert "signal 9" in body["error"]["message"]


def test_processor_bug_reports_no_internals(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(client, processor="boom")["id"]
    assert worker.drain() == 1
    body = get(client, job_id)
    assert body["status"] == "failed"
    assert body["attempts"] == 1
    assert body["error"]["code"] == "processor_crashed"
    message = body["error"]["message"]
    assert "RuntimeError" in message
    assert "kaboom" not in message
    assert "/secret" not in message
    assert "Traceback" not in message


def test_unknown_processor_fails_cleanly(client: TestClient, services: Services, worker: LocalWorker) -> None:
    job_id = submit(client)["id"]
    patch_job(services.db, job_id, processor="gone-since")
    assert worker.drain() == 1
    job = row(services.db, job_id)
    assert (job.status, job.error_code) == ("failed", "unknown_processor")


@pytest.mark.parametrize("kept", ["file", "database"])
def test_missing_input_fails_cleanly(
    client: TestClient, services: Services, worker: LocalWorker, data_dir: Path, kept: str
) -> None:
    if kept == "file":  # larger than FILEJOBS_INLINE_UPLOAD_BYTES: a file in uploads/
        job_id = submit(client, b"x" * (services.settings.inline_upload_bytes + 1))["id"]
        (data_dir / "uploads" / job_id).unlink()
    else:  # a small upload: a row of upload_blobs
        job_id = submit(client)["id"]
        with services.db.write() as session:
            inline_uploads.delete_blob(session, f"inline/{job_id}")
    assert worker.drain() == 1
    job = row(services.db, job_id)
    assert (job.status, job.error_code) == ("failed", "input_missing")


def test_timeout_kills_the_job(own_app: Any) -> None:
    client, _services, worker = own_app(job_timeout=1.0)
    job_id = submit(client, processor="sleep", params={"seconds": 5, "steps": 50})["id"]
    started = time.monotonic()
    assert worker.drain() == 1
    elapsed = time.monotonic() - started
    assert elapsed < 4.0
    body = get(client, job_id)
    assert body["status"] == "failed"
    assert body["error"]["code"] == "timeout"
    assert "1 s" in body["error"]["message"]
    assert body["attempts"] == 1  # a timeout is not retried


# ---- progress -------------------------------------------------------------------------------


def test_progress_is_written_while_running(
    client: TestClient, services: Services, worker: LocalWorker
) -> None:
    steps = 5
    job_id = submit(client, processor="sleep", params={"seconds": 1.5, "steps": steps})["id"]
    observed: list[tuple[float, str | None]] = []
    drain = Background(worker)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = row(services.db, job_id)
        if job.status == "running" and (not observed or observed[-1] != (job.progress, job.message)):
            observed.append((job.progress, job.message))
        if job.status != "running" and job.status != "queued":
            break
        time.sleep(0.02)
    assert drain.join(5) == 1

    intermediate = [(p, m) for p, m in observed if 0 < p < 1]
    assert len({p for p, _ in intermediate}) >= 2, observed
    progresses = [p for p, _ in observed]
    assert progresses == sorted(progresses)  # never goes backwards
    for fraction, message in intermediate:
        assert message is not None
        match = re.fullmatch(r"step (\d+) of (\d+)", message)
        assert match, message
        assert int(match.group(2)) == steps
        assert fraction == pytest.approx(int(match.group(1)) / steps)
    final = get(client, job_id)
    assert final["status"] == "succeeded"
    assert final["progress"] == 1.0


# ---- cancel and delete while running --------------------------------------------------------


def _wait_running(services: Services, job_id: str) -> None:
    wait_until(
        lambda: (job := row(services.db, job_id)).status == "running" and job.progress > 0,
        timeout=15,
        what="the job to run and report progress",
    )


def test_cancel_while_running(
    client: TestClient, services: Services, worker: LocalWorker, data_dir: Path
) -> None:
    job_id = submit(client, processor="sleep", params={"seconds": 30, "steps": 300})["id"]
    drain = Background(worker)
    _wait_running(services, job_id)
    (pid,) = child_pids()
    cancelled_at = time.monotonic()
    answer = client.post(f"/v1/jobs/{job_id}/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "cancelled"
    assert drain.join(10) == 0  # the cancelled attempt does not count as run
    assert drain.finished_at is not None
    assert drain.finished_at - cancelled_at < 3.0  # cooperative: well before the 30 s sleep
    assert process_gone(pid)  # drain() ends its child
    body = get(client, job_id)
    assert body["status"] == "cancelled"
    assert body["result"] is None
    assert output_files(data_dir, job_id) == []
    assert stored_content(data_dir, job_id)  # kept, so the job can be retried
    assert worker.drain() == 0
    assert get(client, job_id)["status"] == "cancelled"


def test_cancel_while_running_ignoring_cancel_kills_the_child(
    client: TestClient, services: Services, worker: LocalWorker, data_dir: Path
) -> None:
    job_id = submit(client, processor="sleep", params={"seconds": 30, "steps": 300, "ignore_cancel": True})[
        "id"
    ]
    drain = Background(worker)
    _wait_running(services, job_id)
    cancelled_at = time.monotonic()
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert drain.join(10) == 0
    assert drain.finished_at is not None
    # Killed after cancel_grace (0.5 s), not when the 30 s sleep ends.
    assert drain.finished_at - cancelled_at < 3.0
    body = get(client, job_id)
    assert body["status"] == "cancelled"
    assert output_files(data_dir, job_id) == []


@pytest.mark.parametrize("ignore_cancel", [False, True])
def test_run_job_after_cancel_leaves_the_child_ready_or_dead(
    client: TestClient, services: Services, worker: LocalWorker, ignore_cancel: bool
) -> None:
    """Directly through run_job: a cooperative child survives to run the next job; a stubborn one
    is killed by the cancel itself, not by any cleanup afterwards.

    Both jobs run in one thread: the child gets SIGKILL when the thread that started it ends
    (PR_SET_PDEATHSIG follows the creating thread)."""
    params = {"seconds": 30, "steps": 300, "ignore_cancel": ignore_cancel}
    job_id = submit(client, processor="sleep", params=params)["id"]
    second = submit(client, processor="where-heavy")["id"]  # not light: it needs the child
    ctx = worker.context(0)
    seen: dict[str, Any] = {}

    def body() -> None:
        try:
            seen["first"] = run_job(job_id, ctx).status
            seen["alive_after_cancel"] = ctx.child.alive()
            seen["pid_after_cancel"] = ctx.child.pid
            seen["second"] = run_job(second, ctx).status
            seen["pid_after_second"] = ctx.child.pid
        finally:
            ctx.child.kill()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    _wait_running(services, job_id)
    pid = ctx.child.pid
    assert pid is not None
    repository.cancel_job(services.db, job_id)
    thread.join(10)
    assert not thread.is_alive()
    assert seen["first"] is None  # no longer ours
    assert seen["second"] is JobStatus.succeeded
    assert row(services.db, job_id).status == "cancelled"
    if ignore_cancel:
        assert seen["alive_after_cancel"] is False
        assert seen["pid_after_cancel"] is None
        assert seen["pid_after_second"] != pid  # a fresh child ran the next job
    else:
        assert seen["alive_after_cancel"] is True
        assert seen["pid_after_cancel"] == pid
        assert seen["pid_after_second"] == pid  # the same process ran the next job
    assert process_gone(pid)


def test_delete_while_running(
    client: TestClient, services: Services, worker: LocalWorker, data_dir: Path
) -> None:
    job_id = submit(client, processor="sleep", params={"seconds": 30, "steps": 300})["id"]
    drain = Background(worker)
    _wait_running(services, job_id)
    (pid,) = child_pids()
    assert job_files(data_dir, job_id)  # the upload exists
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert drain.join(10) == 0
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert repository.get_job(services.db, job_id) is None
    assert job_files(data_dir, job_id) == []
    assert not (data_dir / "outputs" / job_id).exists()
    assert process_gone(pid)


def test_delete_while_running_through_run_job_removes_outputs(
    client: TestClient, services: Services, worker: LocalWorker, data_dir: Path
) -> None:
    """The worker cleans up after itself even when the API deleted the files first."""
    job_id = submit(client, processor="sleep", params={"seconds": 30, "steps": 300})["id"]
    ctx = worker.context(0)
    results: list[JobStatus | None] = []
    thread = threading.Thread(target=lambda: results.append(run_job(job_id, ctx).status), daemon=True)
    thread.start()
    try:
        _wait_running(services, job_id)
        # What a processor writing its output would have left (sleep writes none: the child makes
        # the directory only when a processor asks for it).
        attempt_dir = data_dir / "outputs" / job_id / "1"
        attempt_dir.mkdir(parents=True)
        (attempt_dir / "partial.bin").write_bytes(b"x")
        repository.delete_job(services.db, job_id)  # the row only; the worker removes the files
        thread.join(10)
        assert not thread.is_alive()
        assert results == [None]
        assert job_files(data_dir, job_id) == []
        assert not (data_dir / "outputs" / job_id).exists()
    finally:
        ctx.child.kill()


# ---- retry ----------------------------------------------------------------------------------


def test_retry_failed_job_runs_again(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(client, processor="fail", params={"code": "nope", "message": "no"})["id"]
    assert worker.drain() == 1
    first = get(client, job_id)
    assert first["status"] == "failed"

    answer = client.post(f"/v1/jobs/{job_id}/retry")
    assert answer.status_code == 202
    assert answer.headers["location"] == f"/v1/jobs/{job_id}"
    body = answer.json()
    assert body["status"] == "queued"
    assert body["attempts"] == 0
    assert body["error"] is None
    assert body["finished_at"] is None

    assert worker.drain() == 1
    again = get(client, job_id)
    assert again["status"] == "failed"
    assert again["attempts"] == 1
    assert again["error"] == {"code": "nope", "message": "no"}
    assert again["finished_at"] >= first["finished_at"]


def test_retry_spent_retryable_job_gets_a_fresh_budget(
    client: TestClient, worker: LocalWorker, settings: Settings
) -> None:
    job_id = submit(client, processor="flaky", params={"succeed_on": 99})["id"]
    assert worker.drain() == settings.max_attempts
    assert get(client, job_id)["status"] == "failed"
    assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 202
    assert worker.drain() == settings.max_attempts  # all attempts again, not zero
    body = get(client, job_id)
    assert body["status"] == "failed"
    assert body["attempts"] == settings.max_attempts


def test_retry_cancelled_job_then_succeeds(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(client, b"a b c\n")["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert worker.drain() == 0
    assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 202
    assert worker.drain() == 1
    body = get(client, job_id)
    assert body["status"] == "succeeded"
    assert body["result"]["words"] == 3


def test_retry_succeeded_job_is_a_conflict(client: TestClient, worker: LocalWorker) -> None:
    job_id = submit(client)["id"]
    worker.drain()
    answer = client.post(f"/v1/jobs/{job_id}/retry")
    assert answer.status_code == 409
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert get(client, job_id)["status"] == "succeeded"


def test_retry_removes_previous_outputs(
    client: TestClient, services: Services, worker: LocalWorker, data_dir: Path
) -> None:
    job_id = submit(client, b"abc\n", processor="upper")["id"]
    assert worker.drain() == 1
    outputs = data_dir / "outputs" / job_id
    assert (outputs / "1" / "upper.txt").is_file()
    # Succeeded jobs cannot be retried; make it failed as an operator fixing a bad run might.
    patch_job(services.db, job_id, status="failed")
    (outputs / "1" / "stale.bin").write_bytes(b"from the old run")
    (outputs / "7").mkdir()
    (outputs / "7" / "older.bin").write_bytes(b"from an even older attempt")
    assert client.post(f"/v1/jobs/{job_id}/retry").status_code == 202
    assert worker.drain() == 1
    # The new attempt starts from a clean slate: only its own output is left.
    assert sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*")) == ["1", "1/upper.txt"]
    assert client.get(f"/v1/jobs/{job_id}/result").content == b"ABC\n"


def test_many_jobs_in_one_drain(client: TestClient, services: Services, worker: LocalWorker) -> None:
    ids = [submit(client, f"file {i}\n".encode())["id"] for i in range(5)]
    assert worker.drain() == 5
    for job_id in ids:
        assert wait_for_status(services.db, job_id, "succeeded").attempts == 1
