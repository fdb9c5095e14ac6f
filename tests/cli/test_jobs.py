"""The one-job commands against a real server: status, wait, list, result, cancel, retry, delete,
processors; tables, --json, exit codes, and server errors as red messages (never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from filejobs import testing
from filejobs.testing import Server, free_port
from tests.cli.helpers import run_cli

pytestmark = pytest.mark.e2e


def submit(server: Server, content: bytes = b"hello there\n", **fields: Any) -> str:
    with server.client() as client:
        job_id: str = testing.submit(client, content, **fields)["id"]
    return job_id


def finished(server: Server, job_id: str) -> dict[str, Any]:
    result = run_cli("wait", job_id, "--server", server.base_url, "--json", "--timeout", "30")
    job: dict[str, Any] = json.loads(result.stdout)
    return job


def running(server: Server, job_id: str) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
        for _ in range(100):  # each long-poll returns on a change, or after 1 s
            if job["status"] == "running":
                return
            job = client.get(f"/v1/jobs/{job_id}", params={"wait": 1}).json()
    pytest.fail(f"job {job_id} never ran: {job}")


def test_status_as_a_table_and_as_json(server: Server) -> None:
    job_id = submit(server)
    finished(server, job_id)
    table = run_cli("status", job_id, "--server", server.base_url)
    assert table.exit_code == 0, table.output
    assert job_id in table.stdout
    assert "succeeded" in table.stdout
    assert "hello.txt" in table.stdout
    as_json = run_cli("status", job_id, "--server", server.base_url, "--json")
    job = json.loads(as_json.stdout)
    assert job["id"] == job_id
    assert job["status"] == "succeeded"
    assert job["result"]["words"] == 2


def test_wait_exit_codes(server: Server) -> None:
    good = submit(server, processor="sleep", params={"seconds": 0.2, "steps": 2})
    result = run_cli("wait", good, "--server", server.base_url)
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.stdout

    bad = submit(server, processor="fail", params={"code": "nope"})
    result = run_cli("wait", bad, "--server", server.base_url)
    assert result.exit_code == 1
    assert "nope" in result.stdout

    slow = submit(server, processor="sleep", params={"seconds": 20, "steps": 200})
    result = run_cli("wait", slow, "--server", server.base_url, "--timeout", "0.5")
    assert result.exit_code == 124
    assert f"job {slow} did not finish within 0.5 s" in result.stderr
    run_cli("cancel", slow, "--server", server.base_url)


def test_list_filters_and_limits(server: Server) -> None:
    ids = [submit(server, f"list me {i}\n".encode(), processor="upper") for i in range(3)]
    for job_id in ids:
        finished(server, job_id)
    result = run_cli("list", "--server", server.base_url, "--processor", "upper", "--json")
    listed = json.loads(result.stdout)
    assert {job["id"] for job in listed} >= set(ids)
    assert {job["processor"] for job in listed} == {"upper"}

    limited = json.loads(run_cli("list", "--server", server.base_url, "--limit", "2", "--json").stdout)
    assert len(limited) == 2

    failed = submit(server, processor="fail")
    finished(server, failed)
    by_status = json.loads(
        run_cli("list", "--server", server.base_url, "--status", "failed", "--json").stdout
    )
    assert failed in {job["id"] for job in by_status}
    assert {job["status"] for job in by_status} == {"failed"}

    table = run_cli("list", "--server", server.base_url, "--processor", "upper")
    assert table.exit_code == 0
    assert all(job_id in table.stdout for job_id in ids)


def test_result_json_and_file(server: Server, tmp_path: Path) -> None:
    inspected = submit(server, b"one two three\n")
    finished(server, inspected)
    printed = run_cli("result", inspected, "--server", server.base_url, "--json")
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["words"] == 3
    run_cli("result", inspected, "--server", server.base_url, "-o", tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["words"] == 3

    upper = submit(server, b"shout\n", processor="upper")
    finished(server, upper)
    to_file = run_cli("result", upper, "--server", server.base_url, "-o", tmp_path / "loud.txt")
    assert to_file.exit_code == 0, to_file.output
    assert (tmp_path / "loud.txt").read_text() == "SHOUT\n"
    folder = tmp_path / "folder"
    folder.mkdir()
    to_folder = run_cli("result", upper, "--server", server.base_url, "-o", folder, "--json")
    assert json.loads(to_folder.stdout)["path"] == str(folder / "hello.txt.upper.txt")
    assert (folder / "hello.txt.upper.txt").read_text() == "SHOUT\n"
    to_stdout = run_cli("result", upper, "--server", server.base_url, "-o", "-")
    assert to_stdout.stdout == "SHOUT\n"


def test_result_to_a_folder_named_with_a_trailing_slash_makes_it(server: Server, tmp_path: Path) -> None:
    upper = submit(server, b"shout\n", processor="upper")
    finished(server, upper)
    saved = run_cli("result", upper, "--server", server.base_url, "-o", f"{tmp_path}/out/", "--json")
    assert saved.exit_code == 0, saved.output
    assert json.loads(saved.stdout)["path"] == str(tmp_path / "out" / "hello.txt.upper.txt")
    assert (tmp_path / "out" / "hello.txt.upper.txt").read_text() == "SHOUT\n"

    inspected = submit(server, b"one two\n")
    finished(server, inspected)
    saved = run_cli("result", inspected, "--server", server.base_url, "-o", f"{tmp_path}/json/")
    assert saved.exit_code == 0, saved.output
    assert json.loads((tmp_path / "json" / f"{inspected}.json").read_text())["words"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["json", "out"]


def test_result_of_an_unfinished_job_is_a_red_409(server: Server) -> None:
    slow = submit(server, processor="sleep", params={"seconds": 20, "steps": 200})
    result = run_cli("result", slow, "--server", server.base_url)
    assert result.exit_code == 1
    assert result.stderr.startswith("409 Conflict")
    assert "Traceback" not in result.output
    run_cli("cancel", slow, "--server", server.base_url)


def test_cancel_retry_delete(server: Server) -> None:
    job_id = submit(server, processor="sleep", params={"seconds": 20, "steps": 200})
    running(server, job_id)
    cancelled = run_cli("cancel", job_id, "--server", server.base_url, "--json")
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    again = run_cli("cancel", job_id, "--server", server.base_url)
    assert again.exit_code == 1
    assert "409 Conflict" in again.stderr

    retried = run_cli("retry", job_id, "--server", server.base_url, "--json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["status"] in ("queued", "running")

    deleted = run_cli("delete", job_id, "--server", server.base_url)
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted {job_id}" in deleted.stdout
    gone = run_cli("status", job_id, "--server", server.base_url)
    assert gone.exit_code == 1
    assert "404 Not Found" in gone.stderr


def test_processors(server: Server) -> None:
    table = run_cli("processors", "--server", server.base_url)
    assert table.exit_code == 0
    for name in ("inspect", "sleep", "upper", "thumbnail"):
        assert name in table.stdout
    listed = json.loads(run_cli("processors", "--server", server.base_url, "--json").stdout)
    sleep = next(p for p in listed if p["name"] == "sleep")
    assert "seconds" in sleep["params_schema"]["properties"]


def test_server_url_from_the_environment(server: Server) -> None:
    result = run_cli("processors", "--json", env={"FILEJOBS_URL": server.base_url})
    assert result.exit_code == 0, result.output


def test_unknown_job_and_unreachable_server_are_messages(server: Server) -> None:
    for command in ("status", "wait", "result", "cancel", "retry", "delete"):
        result = run_cli(command, "no-such-job", "--server", server.base_url)
        assert result.exit_code == 1, (command, result.output)
        assert "404 Not Found" in result.stderr
        assert "Traceback" not in result.output
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run_cli("list", "--server", nowhere)
    assert result.exit_code == 1
    assert f"Cannot reach the filejobs server at {nowhere}" in result.stderr
    assert "Traceback" not in result.output


def test_an_unreachable_server_is_said_at_the_first_retry() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run_cli("status", "some-job", "--server", nowhere)
    assert result.exit_code == 1
    first, *rest = result.stderr.splitlines()
    assert first.startswith(f"No answer from {nowhere} yet (ConnectError: ")
    assert first.endswith("retrying, up to 3 times…")
    assert rest[0].startswith(f"Cannot reach the filejobs server at {nowhere}")


@pytest.mark.parametrize("suffix", ["/v1", "/v1/"])
def test_a_server_url_ending_in_v1_is_one_line_with_the_base_url(suffix: str, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "a.txt").write_text("a\n")
    for command in (["list"], ["status", "some-job"], ["submit", tmp_path]):
        result = run_cli(*command, "--server", nowhere + suffix)
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [
            f"The server URL {nowhere}/v1 ends in /v1: give the base URL, {nowhere} "
            "(--server / FILEJOBS_URL)."
        ]
