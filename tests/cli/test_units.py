"""The CLI's pieces without a server: file selection, the ledger file, the resume command, the
progress display."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from filejobs.cli import app
from filejobs.cli.display import Display
from filejobs.cli.files import SourceError, collect
from filejobs.cli.ledger import FileState, Ledger, LedgerBusy, load
from filejobs.cli.report import resume_command
from tests.cli.helpers import make_tree


def relpaths(*args: Path, **options: object) -> list[str]:
    return [s.relpath for s in collect(list(args), **options)]  # type: ignore[arg-type]


def test_collect_walks_folders_sorted_with_relative_paths(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"b.txt": "b", "a/z.txt": "z", "a/b/c.bin": "c", "single.txt": "s"})
    sources = collect([src])
    assert [s.relpath for s in sources] == ["a/b/c.bin", "a/z.txt", "b.txt", "single.txt"]
    assert all(s.path.is_absolute() for s in sources)
    assert sources[0].size == 1
    assert relpaths(src / "a" / "z.txt") == ["z.txt"]


def test_collect_globs_hidden_links_and_skips(tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "x.jpg": "1",
            "deep/y.JPG": "2",
            "deep/er/z.jpg": "3",
            "skip/w.jpg": "4",
            ".h.jpg": "5",
            "n.png": "6",
        },
    )
    assert relpaths(src, include=["*.jpg"]) == ["deep/er/z.jpg", "skip/w.jpg", "x.jpg"]  # case-sensitive
    assert relpaths(src, include=["*.jpg", "*.JPG"], exclude=["skip"]) == [
        "deep/er/z.jpg",
        "deep/y.JPG",
        "x.jpg",
    ]
    assert relpaths(src, include=["deep/*"]) == ["deep/er/z.jpg", "deep/y.JPG"]
    assert relpaths(src, exclude=["deep/*", "*.png"]) == ["skip/w.jpg", "x.jpg"]
    assert ".h.jpg" in relpaths(src, hidden=True)
    assert relpaths(src, skip=[src / "skip", src / "n.png"]) == ["deep/er/z.jpg", "deep/y.JPG", "x.jpg"]

    os.symlink(src / "x.jpg", src / "link.jpg")
    os.symlink(src / "deep", src / "loop")  # a link to a folder is not entered
    os.symlink(src / "missing", src / "dangling.jpg")
    assert relpaths(src, include=["*.jpg"]) == ["deep/er/z.jpg", "link.jpg", "skip/w.jpg", "x.jpg"]


def test_collect_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        collect([tmp_path / "missing"])
    one = make_tree(tmp_path / "one", {"same.txt": "1"})
    two = make_tree(tmp_path / "two", {"same.txt": "2"})
    with pytest.raises(SourceError, match="same relative path"):
        collect([one, two])
    assert len(collect([one, one / "same.txt"])) == 1  # the same file twice is one file


def state(path: str, **fields: object) -> FileState:
    return FileState(path=path, relpath=Path(path).name, size=1, mtime_ns=1, **fields)  # type: ignore[arg-type]


def test_the_ledger_keeps_the_last_record_of_each_path_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    assert load(path) == {}
    with Ledger(path, {"processor": "upper"}) as ledger:
        ledger.append("submit", state("/a", key="k"))
        ledger.append("accepted", state("/a", key="k", job_id="j1", status="queued"))
        ledger.append("submit", state("/b", key="k2"))
    with open(path, "ab") as handle:
        handle.write(b'{"event":"finished","path":"/a","status":"succ')  # torn by kill -9
    loaded = load(path)
    assert loaded["/a"].job_id == "j1"
    assert loaded["/a"].status == "queued"
    assert loaded["/b"].job_id is None
    records = [json.loads(line) for line in path.read_text().splitlines()[:3]]
    assert [r["event"] for r in records] == ["submit", "accepted", "submit"]
    assert records[0]["processor"] == "upper"

    with Ledger(path) as ledger:  # a new record starts on a line of its own
        ledger.append("finished", state("/a", key="k", job_id="j1", status="succeeded"))
    assert load(path)["/a"].status == "succeeded"
    assert path.read_text().splitlines()[-1].startswith('{"event":"finished"')


def test_a_ledger_is_written_by_one_batch_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path), pytest.raises(LedgerBusy):
        Ledger(path).open()
    Ledger(path).open().close()  # free again


def test_a_ledger_gets_the_mode_the_umask_gives(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        Ledger(tmp_path / "l.jsonl").open().close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "l.jsonl").stat().st_mode) == 0o644


def test_the_resume_command_repeats_what_was_typed_without_the_api_key(tmp_path: Path) -> None:
    seen: list[str] = []
    probe = typer.Typer()

    @probe.command()
    def submit(
        ctx: typer.Context,
        paths: list[Path],
        server: str | None = None,
        api_key: str | None = typer.Option(None, "--api-key", envvar="PROBE_KEY"),
        params: str | None = None,
        wait: bool = typer.Option(False, "--wait"),
        concurrency: int = typer.Option(4, "--concurrency", "-c"),
        include: list[str] | None = typer.Option(None, "--include"),
    ) -> None:
        seen.append(resume_command(ctx))

    @probe.command()
    def other() -> None:
        pass

    args = ["submit", "my photos", "--server", "http://h:1", "--api-key", "secret", "-c", "2", "--wait"]
    args += ["--params", '{"size": 64}', "--include", "*.jpg", "--include", "*.png", "--", "-x"]
    result = CliRunner().invoke(probe, args, env={"PROBE_KEY": ""})
    assert result.exit_code == 0, result.output
    assert seen == [
        "filejobs submit --server http://h:1 --params '{\"size\": 64}' --wait --concurrency 2 "
        "--include '*.jpg' --include '*.png' -- 'my photos' -x"
    ]


def test_the_display_shows_bytes_jobs_and_counts_per_status() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    with Display(console, files=3, total=3000) as display:
        for _ in range(3):
            display.status(None, "pending")
        display.status("pending", "uploading")
        display.sent("/a", 1000)
        display.sent("/a", 0)  # a retry starts the upload again: 1000 bytes are sent twice
        display.uploaded("/a", 3000)
        display.status("uploading", "succeeded")
        display.finished()
        display.status("pending", "failed")
        display.finished()
    text = buffer.getvalue()
    assert "uploaded" in text
    assert "3.9/3.9 KiB" in text
    assert "2/3" in text
    assert "pending 1" in text
    assert "succeeded 1" in text
    assert "failed 1" in text
    assert display.uploaded_bytes == 4000


def test_the_bytes_bar_knows_its_total_first_and_never_goes_back() -> None:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    display = Display(console, files=3, total=3000)
    bar = display.bytes.tasks[0]
    seen: list[tuple[float, float | None]] = []

    def look() -> None:
        seen.append((bar.completed, bar.total))

    display.sent("/a", 600)  # the first upload is under way: 20 %, not 100 %
    look()
    display.sent("/a", 0)  # a retry sends it again: the 600 bytes stay, the total grows by them
    display.uploaded("/a", 1000)
    look()
    display.sent("/b", 400)
    display.skip("/b", 1000)  # refused by the server after 400 bytes: they stay, 600 will never come
    look()
    display.skip("/c", 1000)  # a job from the ledger: nothing of it is uploaded
    look()
    assert seen == [(600, 3000), (1600, 3600), (2000, 3000), (2000, 2000)]
    display.to_upload(500)  # a lost job's file goes up again
    display.uploaded("/d", 500)
    assert (bar.completed, bar.total) == (2500, 2500)
    assert display.uploaded_bytes == 2500


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in ("serve", "migrate", "submit", "status", "wait", "list", "result", "cancel", "delete"):
        assert command in result.stdout
    submit_help = CliRunner().invoke(app, ["submit", "--help"], env={"COLUMNS": "200"})
    for option in ("--ledger", "--results", "--include", "--exclude", "--concurrency", "--json", "--wait"):
        assert option in submit_help.stdout
