"""Resumable batches: ``filejobs submit --ledger`` killed (-9) mid-batch, the server killed mid-batch,
Ctrl-C, an upload whose answer was lost, files changed or jobs deleted between runs. After every
re-run, each file has exactly one job on the server (counted through the API) and none is missing.

Every wait is on a real condition (ledger records, a process exiting, the server's upload files),
bounded.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from filejobs.cli.ledger import FileState, Ledger
from filejobs.client import file_sha256, idempotency_key
from filejobs.testing import Server, base_env
from tests.cli.helpers import (
    ServerFactory,
    all_jobs,
    cli_command,
    json_lines,
    ledger_records,
    make_tree,
    poll,
    run_cli,
    spawn_cli,
    uploads_settled,
)

pytestmark = pytest.mark.e2e

FILES = 20
SLEEP = json.dumps({"seconds": 0.1, "steps": 1})


def batch_args(src: Path, server: Server, ledger: Path, *extra: str) -> list[str | Path]:
    return [
        "submit",
        src,
        "--server",
        server.base_url,
        "--processor",
        "sleep",
        "--params",
        SLEEP,
        "--wait",
        "--concurrency",
        "2",
        "--ledger",
        ledger,
        *extra,
    ]


def many_files(root: Path, count: int = FILES, size: int = 1 << 20) -> Path:
    """``count`` distinct files of ``size`` bytes (big enough that uploading them takes a while)."""
    return make_tree(
        root, {f"file-{i:02}.txt": (f"file {i}\n" * (size // 8 + 1))[:size] for i in range(count)}
    )


def events(ledger: Path, kind: str) -> list[dict[str, object]]:
    return [r for r in ledger_records(ledger) if r["event"] == kind]


def assert_one_job_per_file(
    server: Server, src: Path, processor: str = "sleep"
) -> dict[str, dict[str, object]]:
    """Exactly one job for every file under ``src`` (matched by name), each succeeded; by name."""
    jobs = all_jobs(server, processor=processor)
    names = Counter(job["file"]["name"] for job in jobs)
    expected = {p.name for p in src.iterdir()}
    assert set(names) == expected, f"missing: {expected - set(names)}, unexpected: {set(names) - expected}"
    duplicates = {name: count for name, count in names.items() if count > 1}
    assert not duplicates, f"files with more than one job: {duplicates}"
    assert len(jobs) == len(expected)
    assert {job["status"] for job in jobs} == {"succeeded"}
    return {job["file"]["name"]: job for job in jobs}


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the CLI did not exit within {timeout:g} s")


def test_kill9_the_cli_mid_batch_then_rerun(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server(workers=1)
    src = many_files(tmp_path / "src")
    ledger = tmp_path / "batch.jsonl"
    proc = spawn_cli(*batch_args(src, server, ledger), cwd=tmp_path, log=tmp_path / "first")
    try:
        poll(
            lambda: len(events(ledger, "accepted")) >= 3, timeout=60, what="3 accepted uploads in the ledger"
        )
        assert proc.poll() is None, "the batch ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        finish(proc)
    assert proc.returncode == -signal.SIGKILL
    accepted = {r["path"]: r["job_id"] for r in events(ledger, "accepted")}
    assert len(accepted) >= 3
    assert len(events(ledger, "finished")) + len(events(ledger, "accepted")) < 2 * FILES  # mid-batch
    print(f"killed with {len(accepted)} of {FILES} files accepted")
    # The upload in flight at the kill may still be turning into a job on the server. The server
    # does not honour Idempotency-Key yet, so the re-run (which adopts such jobs: see
    # test_an_upload_whose_answer_was_lost_is_adopted_not_submitted_again) starts once it has.
    poll(
        lambda: uploads_settled(server), timeout=30, what="the server to finish the uploads it was receiving"
    )

    again = run_cli(*batch_args(src, server, ledger), "--json")
    assert again.exit_code == 0, again.output
    records = {r["path"]: r for r in json_lines(again.stdout)}
    assert len(records) == FILES
    assert {r["status"] for r in records.values()} == {"succeeded"}
    for path, job_id in accepted.items():  # what had a job was only waited for, not submitted again
        assert records[path]["job_id"] == job_id
    by_name = assert_one_job_per_file(server, src)
    assert {r["job_id"] for r in records.values()} == {job["id"] for job in by_name.values()}

    # A third run has nothing to do: no upload, no new job.
    third = run_cli(*batch_args(src, server, ledger))
    assert third.exit_code == 0, third.output
    assert f"{FILES} files: {FILES} succeeded · 0 B uploaded" in third.stdout
    assert len(all_jobs(server, processor="sleep")) == FILES


def test_kill9_the_server_mid_batch_then_restart_and_rerun(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = start_server(data, workers=1)
    src = many_files(tmp_path / "src", size=4096)
    ledger = tmp_path / "batch.jsonl"
    proc = spawn_cli(*batch_args(src, server, ledger, "--retries", "2"), cwd=tmp_path, log=tmp_path / "first")
    try:
        poll(lambda: len(events(ledger, "finished")) >= 3, timeout=60, what="3 finished jobs in the ledger")
        server.kill9()
        code = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1
    err = (tmp_path / "first.err").read_text()
    assert "Re-run to resume:" in err
    assert "Traceback" not in err
    finished_before = len(events(ledger, "finished"))
    assert finished_before < FILES

    restarted = start_server(data, workers=1)
    again = run_cli(*batch_args(src, restarted, ledger), "--json")
    assert again.exit_code == 0, again.output
    assert {r["status"] for r in json_lines(again.stdout)} == {"succeeded"}
    assert_one_job_per_file(restarted, src)


def test_ctrl_c_exits_130_and_prints_the_command_that_resumes(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(workers=1)
    src = many_files(tmp_path / "src", size=4096)
    ledger = tmp_path / "batch.jsonl"
    proc = spawn_cli(*batch_args(src, server, ledger), cwd=tmp_path, log=tmp_path / "first")
    try:
        poll(
            lambda: len(events(ledger, "accepted")) >= 2, timeout=60, what="2 accepted uploads in the ledger"
        )
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        code = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "first.err").read_text()
    assert code == 130, err
    assert "Interrupted" in err
    assert "Traceback" not in err
    lines = err.splitlines()
    command = lines[next(i for i, line in enumerate(lines) if "Resume with:" in line) + 1].strip()
    words = shlex.split(command)
    assert words[:2] == ["filejobs", "submit"]
    assert sorted(words[2:]) == sorted(str(a) for a in batch_args(src, server, ledger)[1:])

    resumed = subprocess.run(
        cli_command(*words[1:]), cwd=tmp_path, env=base_env(), capture_output=True, timeout=120, check=False
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert_one_job_per_file(server, src)


def test_a_second_ctrl_c_stops_at_once(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server(workers=1)
    src = many_files(tmp_path / "src", size=4096)
    ledger = tmp_path / "batch.jsonl"
    proc = spawn_cli(*batch_args(src, server, ledger), cwd=tmp_path, log=tmp_path / "first")

    def uploads_hanging() -> bool:
        # The 2 uploads, and (without an upload slot) the files after them waiting for the answer
        # of their batch of uploads by hash.
        last = {r["path"]: r for r in ledger_records(ledger)}
        return sum(1 for r in last.values() if r["event"] == "submit") >= 2

    try:
        poll(
            lambda: len(events(ledger, "accepted")) >= 2, timeout=60, what="2 accepted uploads in the ledger"
        )
        os.kill(server.pid, signal.SIGSTOP)  # the uploads on their way now wait for an answer
        poll(uploads_hanging, timeout=30, what="2 uploads waiting for an answer")
        proc.send_signal(signal.SIGINT)
        poll(lambda: "Stopping" in (tmp_path / "first.err").read_text(), timeout=10, what="the first Ctrl-C")
        assert proc.poll() is None  # waiting for the answers (up to GRACE s)
        proc.send_signal(signal.SIGINT)
        code = finish(proc, timeout=5)
    finally:
        os.kill(server.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "first.err").read_text()
    assert code == 130, err
    assert "Resume with:" in err
    assert "Traceback" not in err


def test_an_upload_whose_answer_was_lost_is_adopted_not_submitted_again(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server()
    src = make_tree(tmp_path / "src", {"a.txt": "alpha\n", "b.txt": "bravo\n", "c.txt": "charlie\n"})
    ledger_path = tmp_path / "batch.jsonl"
    lost = src / "b.txt"
    # The CLI wrote its "submit" record, the server made the job, the 202 never came back.
    params = json.loads(SLEEP)
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post(
            "/v1/jobs",
            files={"file": ("b.txt", lost.read_bytes(), "text/plain")},
            data={"processor": "sleep", "params": SLEEP},
        )
    assert response.status_code == 202
    made = response.json()["id"]
    sha = file_sha256(lost)
    stat = lost.stat()
    state = FileState(str(lost), "b.txt", stat.st_size, stat.st_mtime_ns, sha)
    state.key = idempotency_key(sha, stat.st_size, "sleep", params, name="b.txt")
    state.status, state.submitted_at = "uploading", time.time() - 1
    with Ledger(ledger_path) as ledger:
        ledger.append("submit", state)

    result = run_cli(*batch_args(src, server, ledger_path), "--json")
    assert result.exit_code == 0, result.output
    records = {r["relpath"]: r for r in json_lines(result.stdout)}
    assert records["b.txt"]["job_id"] == made
    assert [r["job_id"] for r in events(ledger_path, "adopted")] == [made]
    assert_one_job_per_file(server, src)


def test_changed_files_deleted_jobs_and_failed_jobs_on_rerun(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server()
    src = make_tree(tmp_path / "src", {"a.txt": "a\n", "b.txt": "b\n", "c.txt": "c\n"})
    ledger, out = tmp_path / "batch.jsonl", tmp_path / "out"
    args = ["submit", src, "--server", server.base_url, "--processor", "upper", "--ledger", ledger, "--json"]
    args += ["--results", out]
    first = {r["relpath"]: r["job_id"] for r in json_lines(run_cli(*args).stdout)}
    assert len(first) == 3

    (src / "a.txt").write_text("a changed\n")  # new content: a new job
    # b's result file is gone and so is its job: the re-run fetches (404) and submits b again.
    (out / "b.txt.upper.txt").unlink()
    with httpx.Client(base_url=server.base_url) as client:
        assert client.delete(f"/v1/jobs/{first['b.txt']}").status_code == 204
    second = run_cli(*args)
    assert second.exit_code == 0, second.output
    now = {r["relpath"]: r["job_id"] for r in json_lines(second.stdout)}
    assert now["a.txt"] != first["a.txt"]
    assert now["b.txt"] != first["b.txt"]
    assert now["c.txt"] == first["c.txt"]
    assert [r["relpath"] for r in events(ledger, "lost")] == ["b.txt"]
    assert (out / "a.txt.upper.txt").read_text() == "A CHANGED\n"
    assert (out / "b.txt.upper.txt").read_text() == "B\n"
    assert {job["id"] for job in all_jobs(server, processor="upper")} == {*first.values(), *now.values()} - {
        first["b.txt"]
    }

    # A failed job stays failed on a re-run, unless --retry-failed.
    failing = [
        "submit",
        src / "c.txt",
        "--server",
        server.base_url,
        "--processor",
        "fail",
        "--wait",
        "--json",
    ]
    failing += ["--ledger", tmp_path / "fail.jsonl"]
    failed = json_lines(run_cli(*failing).stdout)[0]
    assert failed["status"] == "failed"
    rerun = run_cli(*failing)
    assert rerun.exit_code == 1
    assert json_lines(rerun.stdout)[0]["job_id"] == failed["job_id"]
    assert not events(tmp_path / "fail.jsonl", "retried")
    retried = run_cli(*failing, "--retry-failed")
    assert retried.exit_code == 1
    assert json_lines(retried.stdout)[0]["job_id"] == failed["job_id"]
    assert len(events(tmp_path / "fail.jsonl", "retried")) == 1
    assert json_lines(retried.stdout)[0]["status"] == "failed"  # retried, and failed again


def test_a_torn_last_line_is_ignored_and_a_busy_ledger_refused(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server()
    src = make_tree(tmp_path / "src", {"a.txt": "a\n", "b.txt": "b\n"})
    ledger = tmp_path / "batch.jsonl"
    args = ["submit", src, "--server", server.base_url, "--processor", "upper", "--wait", "--ledger", ledger]
    assert run_cli(*args).exit_code == 0
    with open(ledger, "ab") as handle:
        handle.write(b'{"event":"accepted","path":"' + str(src / "a.txt").encode())  # kill -9 mid-write
    again = run_cli(*args, "--json")
    assert again.exit_code == 0, again.output
    assert len(all_jobs(server, processor="upper")) == 2
    lines = ledger.read_bytes().splitlines()
    assert sum(1 for line in lines if not line.startswith(b"{") or not line.endswith(b"}")) == 1

    with open(ledger, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = run_cli(*args)
    assert busy.exit_code == 1
    assert "in use by another filejobs submit" in busy.stderr
