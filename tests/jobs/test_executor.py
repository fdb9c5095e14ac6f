"""The parent's side of the child-process protocol (``ChildProcess``), driven directly."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from filejobs.jobs.executor import ChildProcess, Control, Outcome
from filejobs.jobs.messages import Progress, RunRequest
from filejobs.processors.base import Limits
from tests.jobs.helpers import process_gone, wait_until

INSPECT = "filejobs.processors.inspect:Inspect"
SLEEP = "tests.sample_processors:Sleep"


class Ticks:
    """A ``tick`` that records its calls and answers from a script."""

    def __init__(self, answer: Any = Control.CONTINUE) -> None:
        self.calls: list[tuple[float | None, str | None]] = []
        self.answer = answer

    def __call__(self, progress: float | None, message: str | None) -> str:
        self.calls.append((progress, message))
        result: str = self.answer(self) if callable(self.answer) else self.answer
        return result

    @property
    def progress(self) -> list[tuple[float, str | None]]:
        return [(p, m) for p, m in self.calls if p is not None]


def request(
    work: Path,
    spec: str,
    params: dict[str, Any] | None = None,
    content: bytes = b"a b c\n",
    limits: Limits | None = None,
) -> RunRequest:
    source = work / "input.bin"
    source.write_bytes(content)
    out = work / "out"
    out.mkdir(exist_ok=True)
    return RunRequest(
        spec=spec,
        input=str(source),
        output_dir=str(out),
        params=params or {},
        file_name="input.bin",
        content_type="text/plain",
        limits=limits or Limits(),
    )


def run(
    child: ChildProcess,
    req: RunRequest,
    tick: Ticks | None = None,
    *,
    timeout: float = 20.0,
    cancel_grace: float = 0.5,
) -> Outcome:
    return child.run(req, tick=tick or Ticks(), timeout=timeout, cancel_grace=cancel_grace)


def test_runs_inspect(child: ChildProcess, work: Path) -> None:
    content = b"alpha beta\ngamma\n" * 1000
    ticks = Ticks()
    outcome = run(child, request(work, INSPECT, content=content), ticks)
    assert outcome.kind == "done"
    result = outcome.done.result
    assert result["size"] == len(content)
    assert result["sha256"] == hashlib.sha256(content).hexdigest()
    assert result["md5"] == hashlib.md5(content).hexdigest()
    assert (result["lines"], result["words"]) == (2000, 3000)
    assert outcome.done.file is None
    assert all(fraction < 1.0 for fraction, _ in ticks.progress)  # a bare 1.0 is left to the Done
    assert child.alive()


def test_a_trivial_job_sends_only_its_answer(child: ChildProcess, work: Path) -> None:
    """inspect on a small file reports progress once, 1.0 with no message: the Done says it, so
    that progress is not sent (one message each way per trivial job)."""
    child.start()
    child._send(request(work, INSPECT, content=b"a b c\n"))
    replies = []
    while not replies or isinstance(replies[-1], Progress):
        reply = child._next_message(20.0)
        assert reply is not None, "no answer from the child"
        replies.append(reply)
    assert [type(reply).__name__ for reply in replies] == ["Done"]


def test_child_is_reused_between_runs(child: ChildProcess, work: Path) -> None:
    first = run(child, request(work, SLEEP, {"seconds": 0, "steps": 1}))
    second = run(child, request(work, SLEEP, {"seconds": 0, "steps": 1}))
    assert first.kind == second.kind == "done"
    assert first.done.result["pid"] == second.done.result["pid"] == child.pid


def test_processor_prints_do_not_corrupt_the_protocol(
    child: ChildProcess, work: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ticks = Ticks()
    outcome = run(child, request(work, "tests.sample_processors:Chatty"), ticks)
    assert outcome.kind == "done"
    assert outcome.done.result == {"chatty": True}  # not the forged one it printed
    assert (0.5, "half") in ticks.progress
    # The protocol is still in step: the same child answers the next request correctly.
    pid = child.pid
    again = run(child, request(work, INSPECT, content=b"x y\n"))
    assert again.kind == "done"
    assert again.done.result["words"] == 2
    assert child.pid == pid
    # What it printed went to stderr (the server log), not nowhere.
    err = capfd.readouterr().err
    assert "chatty: plain print" in err
    assert "chatty: raw fd 1" in err
    assert "chatty: after progress" in err


def test_progress_and_idle_ticks(child: ChildProcess, work: Path) -> None:
    ticks = Ticks()
    outcome = run(child, request(work, SLEEP, {"seconds": 0.6, "steps": 3}), ticks)
    assert outcome.kind == "done"
    assert [p for p, _ in ticks.progress] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [m for _, m in ticks.progress] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert (None, None) in ticks.calls  # idle ticks while a step sleeps


def test_closing_stdin_makes_an_idle_child_exit(child: ChildProcess) -> None:
    child.start()
    proc = child._proc
    assert proc is not None
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=5) == 0


def test_closing_stdin_stops_a_running_job(child: ChildProcess, work: Path) -> None:
    """The parent dying mid-job (its end of the pipe closes) stops the processor at once."""
    child.start()
    proc = child._proc
    assert proc is not None
    assert proc.stdin is not None
    child._send(request(work, SLEEP, {"seconds": 60, "steps": 600}))
    assert wait_until(lambda: isinstance(child._next_message(0.1), Progress), timeout=10)
    started = time.monotonic()
    proc.stdin.close()
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5


def test_kill_then_run_starts_a_fresh_child(child: ChildProcess, work: Path) -> None:
    first = run(child, request(work, SLEEP, {"seconds": 0, "steps": 1}))
    old_pid = first.done.result["pid"]
    assert old_pid == child.pid
    child.kill()
    assert not child.alive()
    assert child.pid is None
    assert process_gone(old_pid)
    child.kill()  # idempotent
    second = run(child, request(work, SLEEP, {"seconds": 0, "steps": 1}))
    assert second.kind == "done"
    new_pid = second.done.result["pid"]
    assert new_pid == child.pid
    assert new_pid != old_pid


def test_errors_are_reported_with_their_code(child: ChildProcess, work: Path) -> None:
    outcome = run(child, request(work, "tests.sample_processors:Fail", {"code": "bad", "message": "no good"}))
    assert outcome.kind == "error"
    assert (outcome.failed.code, outcome.failed.message, outcome.failed.retryable) == (
        "bad",
        "no good",
        False,
    )
    outcome = run(child, request(work, "tests.sample_processors:Fail", {"retryable": True}))
    assert outcome.kind == "error"
    assert outcome.failed.retryable is True


def test_processor_bug_is_a_short_error(child: ChildProcess, work: Path) -> None:
    outcome = run(child, request(work, "tests.sample_processors:Boom"))
    assert outcome.kind == "error"
    assert outcome.failed.code == "processor_crashed"
    assert "kaboom" not in outcome.failed.message
    assert child.alive()  # an exception does not cost the child


def test_unloadable_processor(child: ChildProcess, work: Path) -> None:
    outcome = run(child, request(work, "tests.nowhere:Nothing"))
    assert outcome.kind == "error"
    assert outcome.failed.code == "processor_unavailable"
    assert outcome.failed.retryable is False


def test_crash_is_reported_with_its_signal(child: ChildProcess, work: Path) -> None:
    for _ in range(3):  # the exit status must be read reliably, not raced
        outcome = run(child, request(work, "tests.sample_processors:Crash"))
        assert outcome.kind == "crashed"
        assert "signal 9" in outcome.failed.message
        assert not child.alive()
    assert run(child, request(work, INSPECT)).kind == "done"  # and the next run gets a new child


def test_timeout_kills_the_child(child: ChildProcess, work: Path) -> None:
    child.start()
    pid = child.pid
    assert pid is not None
    started = time.monotonic()
    outcome = run(child, request(work, SLEEP, {"seconds": 30, "steps": 300}), timeout=0.5)
    assert outcome.kind == "timeout"
    assert "0.5 s" in outcome.failed.message
    assert time.monotonic() - started < 15  # killed at the timeout, not after the 30 s sleep
    assert process_gone(pid)


def test_cooperative_cancel_keeps_the_child(child: ChildProcess, work: Path) -> None:
    ticks = Ticks(lambda t: Control.CANCEL if t.progress else Control.CONTINUE)
    started = time.monotonic()
    outcome = run(child, request(work, SLEEP, {"seconds": 60, "steps": 600}), ticks, cancel_grace=30)
    assert outcome.kind == "cancelled"
    assert time.monotonic() - started < 20  # well within the 30 s grace
    assert child.alive()  # not killed: the processor stopped itself
    assert run(child, request(work, INSPECT)).kind == "done"


def test_ignored_cancel_is_killed_after_the_grace(child: ChildProcess, work: Path) -> None:
    ticks = Ticks(lambda t: Control.CANCEL if t.progress else Control.CONTINUE)
    child.start()
    pid = child.pid
    assert pid is not None
    started = time.monotonic()
    outcome = run(
        child,
        request(work, SLEEP, {"seconds": 30, "steps": 300, "ignore_cancel": True}),
        ticks,
        cancel_grace=0.5,
    )
    elapsed = time.monotonic() - started
    assert outcome.kind == "cancelled"
    assert 0.5 <= elapsed < 15  # killed after the grace, not after the 30 s sleep
    assert not child.alive()
    assert process_gone(pid)


def test_stop_kills_at_once(child: ChildProcess, work: Path) -> None:
    ticks = Ticks(lambda t: Control.STOP if t.progress else Control.CONTINUE)
    child.start()
    pid = child.pid
    assert pid is not None
    outcome = run(child, request(work, SLEEP, {"seconds": 30, "steps": 300}), ticks, cancel_grace=30)
    assert outcome.kind == "stopped"
    assert process_gone(pid)


def test_output_file_must_be_in_the_output_dir(child: ChildProcess, work: Path) -> None:
    outcome = run(child, request(work, "tests.sample_processors:Upper", content=b"abc"))
    assert outcome.kind == "done"
    path = Path(outcome.done.file)
    assert path.read_bytes() == b"ABC"
    assert path.parent == (work / "out").resolve()
    assert outcome.done.file_name == "input.bin.upper.txt"


def test_processors_run_niced_so_the_api_keeps_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """FILEJOBS_PROCESSOR_NICE (default 10) lowers the priority of the processes running processors."""
    monkeypatch.setenv("FILEJOBS_PROCESSOR_NICE", "7")  # the child reads its settings itself
    child = ChildProcess()
    try:
        child.start()
        assert child.pid is not None
        assert psutil.Process(child.pid).nice() == os.getpriority(os.PRIO_PROCESS, 0) + 7
    finally:
        child.kill()


def test_stored_params_the_processor_no_longer_accepts_fail_as_invalid_params(
    child: ChildProcess, work: Path
) -> None:
    """A job stored before csv-profile checked its encoding at submit (issue 14, item 3) fails
    with a clear code when it runs, not as a processor crash."""
    req = request(work, "filejobs.processors.csv_profile:CsvProfile", {"encoding": "idna"}, b"a,b\n1,2\n")
    outcome = run(child, req)
    assert outcome.kind == "error"
    assert outcome.failed.code == "invalid_params"
    assert "no longer accepted" in outcome.failed.message
    assert outcome.failed.retryable is False
    assert child.alive()
