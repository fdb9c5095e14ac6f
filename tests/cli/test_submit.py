"""``filejobs submit`` in-process against a real server: folders end to end, results on disk,
exit codes and the failure table, params errors, include/exclude, --json."""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from PIL import Image

from filejobs.cli.display import Display
from filejobs.testing import Server, free_port
from tests.cli.helpers import all_jobs, json_lines, make_tree, run_cli, spawn_cli

pytestmark = pytest.mark.e2e


def url(server: Server) -> list[str]:
    return ["--server", server.base_url]


def test_a_folder_end_to_end_with_file_results(server: Server, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {"one.txt": "first file\n", "a/two.txt": "second\n", "a/b/three.txt": "third one\n"},
    )
    out = tmp_path / "out"
    result = run_cli("submit", src, *url(server), "--processor", "upper", "--wait", "--results", out)
    assert result.exit_code == 0, result.output
    assert "3 files: 3 succeeded" in result.stdout
    assert "Not succeeded" not in result.stdout
    # File results: the server's file name, in the folder of the relative path.
    assert (out / "one.txt.upper.txt").read_text() == "FIRST FILE\n"
    assert (out / "a" / "two.txt.upper.txt").read_text() == "SECOND\n"
    assert (out / "a" / "b" / "three.txt.upper.txt").read_text() == "THIRD ONE\n"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a/b/three.txt.upper.txt",
        "a/two.txt.upper.txt",
        "one.txt.upper.txt",
    ]


def test_json_results_are_written_as_relpath_json(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"notes/a.txt": "one two three\n", "b.txt": "four\n"})
    out = tmp_path / "out"
    result = run_cli("submit", src, *url(server), "--results", out, "--json")  # inspect; --results waits
    assert result.exit_code == 0, result.output
    assert json.loads((out / "notes" / "a.txt.json").read_text())["words"] == 3
    assert json.loads((out / "b.txt.json").read_text())["words"] == 1
    records = {r["relpath"]: r for r in json_lines(result.stdout)}
    assert records["b.txt"]["result_path"] == str(out / "b.txt.json")


def test_results_of_the_same_name_do_not_overwrite_each_other(server: Server, tmp_path: Path) -> None:
    def image(colour: tuple[int, int, int], fmt: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 32), colour).save(buffer, fmt)
        return buffer.getvalue()

    src = make_tree(
        tmp_path / "photos", {"a.jpg": image((255, 0, 0), "JPEG"), "a.png": image((0, 0, 255), "PNG")}
    )
    out = tmp_path / "thumbs"
    args = (
        "submit",
        src,
        *url(server),
        "--processor",
        "thumbnail",
        "--params",
        '{"size": 16}',
        "--results",
        out,
    )
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    paths = {r["relpath"]: Path(r["result_path"]) for r in json_lines(result.stdout)}
    assert len(set(paths.values())) == 2
    assert {p.name for p in paths.values()} in (
        {"a.thumb.webp", "a.png.a.thumb.webp"},
        {"a.thumb.webp", "a.jpg.a.thumb.webp"},
    )
    for path in paths.values():
        with Image.open(path) as im:
            assert im.format == "WEBP"
            assert im.size == (16, 8)


def cells(row: str) -> list[str]:
    """The cells of a table row as printed: ``│ a │ b │`` → ``["a", "b"]``."""
    return [cell.strip() for cell in row.split("│")[1:-1]]


def test_a_failed_job_exits_1_with_the_failure_table(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"bad1.txt": "x\n", "bad2.txt": "y\n"})
    params = json.dumps({"code": "not_today", "message": "refused by the test"})
    result = run_cli("submit", src, *url(server), "--processor", "fail", "--params", params, "--wait")
    assert result.exit_code == 1, result.output
    assert "2 files: 2 failed" in result.stdout
    assert "Not succeeded" in result.stdout
    rows = [cells(line) for line in result.stdout.splitlines() if "bad1.txt" in line]  # the same failure
    assert rows == [["2", "bad1.txt, bad2.txt", "", "failed", "not_today", "refused by the test"]]
    assert "Traceback" not in result.output


def test_one_failure_shows_its_job_and_identical_refusals_are_one_row(server: Server, tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    files: dict[str, bytes | str] = {f"p{i:02}.png": png.getvalue() for i in range(25)}
    src = make_tree(tmp_path / "src", {**files, "empty.txt": b"", "fine.txt": "ok\n"})
    result = run_cli("submit", src, *url(server), "--processor", "upper", "--wait")
    assert result.exit_code == 1, result.output
    rows = [cells(line)[:5] for line in result.stdout.splitlines() if "rejected" in line and "│" in line]
    assert rows == [
        ["1", "empty.txt", "", "rejected", "http_422"],
        ["25", "p00.png, p01.png, p02.png, … (22 more)", "", "rejected", "http_415"],
    ]

    failed = make_tree(tmp_path / "one", {"bad.txt": "x\n"})
    params = json.dumps({"code": "not_today", "message": "refused by the test"})
    result = run_cli("submit", failed, *url(server), "--processor", "fail", "--params", params, "--wait")
    job = next(job for job in all_jobs(server, processor="fail") if job["file"]["name"] == "bad.txt")
    row = next(line for line in result.stdout.splitlines() if "bad.txt" in line)
    assert job["id"] in row


def test_the_bytes_bar_of_a_batch_never_goes_back_and_ends_full(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[list[tuple[float, float]]] = []

    class Watched(Display):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.seen: list[tuple[float, float]] = []
            bars.append(self.seen)

        def _grow(self, size: int) -> None:
            super()._grow(size)
            self.seen.append((self.bytes.tasks[0].completed, self.bytes.tasks[0].total or 0))

        def sent(self, path: str, sent: int) -> None:
            super().sent(path, sent)
            self.seen.append((self.bytes.tasks[0].completed, self.bytes.tasks[0].total or 0))

    monkeypatch.setattr("filejobs.cli.submit.Display", Watched)
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    src = make_tree(tmp_path / "src", {"a.txt": "a" * 5000, "b.png": png.getvalue(), "c.txt": "c\n"})
    args = ("submit", src, *url(server), "--processor", "upper", "--ledger", tmp_path / "l.jsonl")
    run_cli(*args)  # b.png is refused (415)
    run_cli(*args)  # a resumed run: a.txt and c.txt have their jobs, b.png is refused again
    total = sum(p.stat().st_size for p in src.iterdir())
    for seen in bars:
        assert seen, "the bar never moved"
        completed = [c for c, _ in seen]
        assert completed == sorted(completed)  # never back
        assert all(c <= t <= total for c, t in seen)
        assert seen[-1][0] == seen[-1][1]  # 100 % at the end
    assert bars[0][0][1] == total  # every byte in the total from the first upload on
    refused = (src / "b.png").stat().st_size
    assert bars[1][-1] == (refused, refused)  # the resumed run: only b.png went up again


def test_without_wait_the_summary_lists_every_job(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {f"job{i}.txt": f"file {i}\n" for i in range(3)})
    result = run_cli("submit", src, *url(server), "--processor", "upper")
    assert result.exit_code == 0, result.output
    assert "Submitted" in result.stdout
    jobs = {job["file"]["name"]: job["id"] for job in all_jobs(server, processor="upper")}
    for name in ("job0.txt", "job1.txt", "job2.txt"):
        row = next(line for line in result.stdout.splitlines() if name in line)
        assert jobs[name] in row


def test_a_rejected_file_is_a_failure_and_the_rest_goes_on(server: Server, tmp_path: Path) -> None:
    # upper accepts text/* only: the PNG is refused (415), the text file is processed.
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    src = make_tree(tmp_path / "src", {"fine.txt": "ok\n", "picture.png": png.getvalue(), "empty.txt": b""})
    result = run_cli("submit", src, *url(server), "--processor", "upper", "--wait", "--json")
    assert result.exit_code == 1, result.output
    records = {r["relpath"]: r for r in json_lines(result.stdout)}
    assert records["fine.txt"]["status"] == "succeeded"
    assert records["picture.png"]["status"] == "rejected"
    assert records["picture.png"]["error"]["code"] == "http_415"
    assert records["picture.png"]["job_id"] is None
    assert records["empty.txt"]["status"] == "rejected"
    assert records["empty.txt"]["error"]["code"] == "http_422"


def test_without_wait_success_means_accepted(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {f"f{i}.txt": f"file {i}\n" for i in range(3)})
    result = run_cli(
        "submit", src, *url(server), "--processor", "sleep", "--params", '{"seconds": 0.2}', "--json"
    )
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    assert len(records) == 3
    assert {r["status"] for r in records} <= {"queued", "running", "succeeded"}
    assert all(r["job_id"] for r in records)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{bad", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"a": ' * 2000 + "1" + "}" * 2000, "nested too deeply"),
        ('{"n": ' + "9" * 5000 + "}", "more than 4300 digits"),
    ],
    ids=["bad", "array", "deep", "huge-int"],
)
def test_params_that_are_not_a_json_object_are_a_usage_error(
    server: Server, tmp_path: Path, params: str, message: str
) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a\n"})
    result = run_cli("submit", src, *url(server), "--params", params)
    assert result.exit_code == 2, result.output
    assert "--params" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_params_the_processor_refuses_stop_the_batch_with_exit_2(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {f"f{i}.txt": f"{i}\n" for i in range(5)})
    before = len(all_jobs(server, processor="sleep"))
    result = run_cli("submit", src, *url(server), "--processor", "sleep", "--params", '{"seconds": "soon"}')
    assert result.exit_code == 2, result.output
    assert "Invalid params for processor 'sleep'" in result.stderr
    assert "seconds" in result.stderr
    assert len(all_jobs(server, processor="sleep")) == before
    assert "Traceback" not in result.output


def test_an_unknown_processor_is_a_usage_error_naming_the_real_ones(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a\n"})
    result = run_cli("submit", src, *url(server), "--processor", "no-such-thing")
    assert result.exit_code == 2, result.output
    assert "Unknown processor 'no-such-thing'" in result.stderr
    assert "upper" in result.stderr


def test_include_exclude_and_hidden(server: Server, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "a.txt": "a",
            "b.log": "b",
            "sub/c.txt": "c",
            "sub/deeper/d.TXT": "d",
            "node_modules/e.txt": "e",
            "raw/f.txt": "f",
            ".hidden.txt": "g",
            ".git/h.txt": "h",
        },
    )

    def submitted(*options: str) -> set[str]:
        result = run_cli("submit", src, *url(server), "--json", *options)
        assert result.exit_code == 0, result.output
        return {r["relpath"] for r in json_lines(result.stdout)}

    assert submitted() == {
        "a.txt",
        "b.log",
        "sub/c.txt",
        "sub/deeper/d.TXT",
        "node_modules/e.txt",
        "raw/f.txt",
    }
    assert submitted("--include", "*.txt", "--exclude", "node_modules", "--exclude", "raw/*") == {
        "a.txt",
        "sub/c.txt",
    }
    assert submitted("--include", "sub/*", "--include", "*.log") == {"b.log", "sub/c.txt", "sub/deeper/d.TXT"}
    assert submitted("--include", "*.txt", "--hidden") == {
        "a.txt",
        "sub/c.txt",
        "node_modules/e.txt",
        "raw/f.txt",
        ".hidden.txt",
        ".git/h.txt",
    }
    # A file named on the command line is taken as it is.
    result = run_cli("submit", src / ".hidden.txt", *url(server), "--json", "--exclude", "*.txt")
    assert [r["relpath"] for r in json_lines(result.stdout)] == [".hidden.txt"]


def test_json_output_is_one_object_per_file_and_nothing_else(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"x.txt": "hello\n", "y/z.txt": "world\n"})
    result = run_cli("submit", src, *url(server), "--wait", "--json")
    assert result.exit_code == 0, result.output
    records = json_lines(result.stdout)
    assert sorted(r["relpath"] for r in records) == ["x.txt", "y/z.txt"]
    for record in records:
        assert set(record) == {
            "path",
            "relpath",
            "size",
            "sha256",
            "job_id",
            "status",
            "error",
            "result_path",
        }
        assert record["status"] == "succeeded"
        assert Path(record["path"]).is_absolute()
        assert len(record["sha256"]) == 64
    assert result.stderr == ""


def test_two_arguments_with_the_same_relative_path_are_refused(server: Server, tmp_path: Path) -> None:
    one = make_tree(tmp_path / "one", {"same.txt": "1"})
    two = make_tree(tmp_path / "two", {"same.txt": "2"})
    result = run_cli("submit", one, two, *url(server))
    assert result.exit_code == 2
    assert "same relative path 'same.txt'" in result.stderr


def test_a_missing_path_is_a_usage_error(server: Server, tmp_path: Path) -> None:
    result = run_cli("submit", tmp_path / "nope", *url(server))
    assert result.exit_code == 2
    assert "no such file or folder" in result.stderr


def test_an_empty_folder_submits_nothing(server: Server, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("submit", tmp_path / "empty", *url(server))
    assert result.exit_code == 0
    assert "No files to submit" in result.stderr


def test_connection_refused_is_a_clear_message(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a\n"})
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run_cli("submit", src, "--server", nowhere, "--retries", "1")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"No answer from {nowhere} yet (ConnectError: ")
    assert f"Cannot reach the filejobs server at {nowhere}" in result.stderr
    assert "Traceback" not in result.output


def test_the_ledger_and_results_folder_inside_the_tree_are_not_submitted(
    server: Server, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "a\n"})
    args = ("submit", src, *url(server), "--ledger", src / "batch.jsonl", "--results", src / "out", "--json")
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    assert [r["relpath"] for r in json_lines(again.stdout)] == ["a.txt"]


def test_uploading_a_large_file_keeps_the_cli_small(server: Server, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:  # sparse: instant to make, 512 MiB to read and send
        handle.truncate(512 << 20)
    proc = spawn_cli("submit", big, *url(server), "--json", cwd=tmp_path, log=tmp_path / "big")
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.02)
    assert proc.returncode == 0, (tmp_path / "big.err").read_text()
    record = json_lines((tmp_path / "big.out").read_text())[0]
    assert record["size"] == 512 << 20
    assert record["status"] in ("queued", "running", "succeeded")
    print(f"CLI peak RSS {peak >> 20} MiB")
    assert peak < 200 << 20, f"the CLI peaked at {peak >> 20} MiB uploading 512 MiB"
