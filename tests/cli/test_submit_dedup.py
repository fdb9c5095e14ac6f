"""``filejobs submit`` and the client ask by hash first: a re-run sends no byte the server holds,
and says so; ``--no-reuse`` / ``reuse=False`` ask for fresh runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from filejobs.client import Client
from filejobs.testing import Server
from tests.cli.helpers import all_jobs, make_tree, run_cli, server_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own, with result reuse on (the service's default)."""
    root = tmp_path_factory.mktemp("server")
    with Server(root / "data", env=server_env(reuse="true"), log_path=root / "server.log") as shared:
        yield shared


def test_a_rerun_sends_no_byte_and_reuses_every_result(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"one.txt": "dedup first\n", "a/two.txt": "dedup second\n"})
    args = ["submit", src, "--server", server.base_url, "--processor", "upper", "--wait"]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    assert "2 files: 2 succeeded" in first.stdout
    assert "not sent" not in first.stdout

    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    assert "2 files: 2 succeeded · 0 B uploaded" in again.stdout, again.stdout
    assert "25 B not sent (already on the server)" in again.stdout, again.stdout

    fresh = run_cli(*args, "--no-reuse")
    assert fresh.exit_code == 0, fresh.output
    assert "0 B uploaded" in fresh.stdout
    ran = [
        job for job in all_jobs(server, processor="upper") if job["file"]["name"] in ("one.txt", "two.txt")
    ]
    assert len([job for job in ran if job["reused_from"] is None and job["attempts"] == 1]) == 4
    assert len([job for job in ran if job["reused_from"] is not None]) == 0  # the re-run replayed its keys


def test_the_client_skips_held_bytes_and_takes_a_kept_result(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "scan.txt"
    path.write_bytes(b"client by hash\n")
    skipped: list[int] = []
    with Client(server.base_url, timeout=30) as client:
        first = client.wait(client.submit(path, processor="upper", on_skipped=skipped.append).id, timeout=30)
        assert first.succeeded
        assert skipped == []
        second = client.submit(path, processor="upper", idempotency_key="another", on_skipped=skipped.append)
        assert skipped == [path.stat().st_size]
        assert second.status == "succeeded"
        assert second.reused_from == first.id
        assert second.attempts == 0
        fresh = client.submit(path, processor="upper", reuse=False, on_skipped=skipped.append)
        assert fresh.reused_from is None
        assert client.wait(fresh.id, timeout=30).attempts == 1
        client.result(fresh.id, to=tmp_path / "fresh.txt")
        client.result(second.id, to=tmp_path / "second.txt")
        assert (
            (tmp_path / "fresh.txt").read_bytes()
            == (tmp_path / "second.txt").read_bytes()
            == b"CLIENT BY HASH\n"
        )
