"""What every command shares at its entry: a closed stdout (``filejobs … | head -1``) and bad
``FILEJOBS_*`` values end quietly or in one line, never in a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from filejobs.testing import Server
from tests.cli.helpers import cli_command, cli_process, make_tree, run_cli

pytestmark = pytest.mark.e2e


def run_with_closed_stdout(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``filejobs ARGS`` as a process whose stdout is a pipe nobody reads any more (as after
    ``| head -1`` has read its line): its first write fails with EPIPE, every time."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            cli_command(*args),
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
            **cli_process(cwd),
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("extra", [["--json"], ["--json", "--wait"], []], ids=["json", "wait", "summary"])
def test_submit_into_a_closed_pipe_ends_quietly(server: Server, tmp_path: Path, extra: list[str]) -> None:
    src = make_tree(tmp_path / "src", {f"f{i:02}.txt": f"file {i}\n" for i in range(12)})
    done = run_with_closed_stdout("submit", src, "--server", server.base_url, *extra, cwd=tmp_path)
    assert done.returncode == 141, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    assert b"Error" not in done.stderr


@pytest.mark.parametrize("command", [["list", "--json"], ["processors"]])
def test_one_job_commands_into_a_closed_pipe_end_quietly(
    server: Server, tmp_path: Path, command: list[str]
) -> None:
    done = run_with_closed_stdout(*command, "--server", server.base_url, cwd=tmp_path)
    assert done.returncode == 141, done.stderr.decode()
    assert done.stderr == b""


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["keys", "list"]])
def test_a_bad_environment_value_is_one_line_naming_the_variable(command: list[str]) -> None:
    result = run_cli(*command, env={"FILEJOBS_WORKERS": "abc"})
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "Invalid FILEJOBS_WORKERS: Input should be a valid integer, unable to parse string as an integer"
    ]


@pytest.mark.parametrize("command", [["serve"], ["migrate"], ["keys", "list"]])
@pytest.mark.parametrize(
    "url",
    [
        "foo://user:s3cret@db/jobs",
        "postgresql+asyncpg://user:s3cret@db/jobs",
        "postgresql://user:s3cret@db:x/j",
    ],
)
def test_a_database_url_filejobs_cannot_drive_is_one_line(
    command: list[str], url: str, tmp_path: Path
) -> None:
    """An unknown scheme, a driver that is not installed, a URL that does not parse: one line when
    the settings are read, before anything starts, and never the URL's password."""
    result = run_cli(*command, env={"FILEJOBS_DATABASE_URL": url, "FILEJOBS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "Invalid FILEJOBS_DATABASE_URL: Value error, not a database URL filejobs can use ("
    ), line
    assert "s3cret" not in result.output


def test_migrate_against_a_database_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/jobs"  # nothing listens on port 1
    result = run_cli("migrate", env={"FILEJOBS_DATABASE_URL": url, "FILEJOBS_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("filejobs migrate: the database cannot be used: connection failed: "), line
    assert "s3cret" not in result.output
