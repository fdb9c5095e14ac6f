"""Light processors on small inputs run in the worker's own thread (``jobs/inline.py``): the same
results, failures and cleanup as in the child, and the child only where it is still needed.

``where`` (tests/sample_processors.py) is light and reports the pid it ran in: the test process's
own pid means the burst worker's thread ran it; ``where-heavy`` is the same, not light.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from filejobs.jobs import repository
from filejobs.jobs.executor import ChildProcess, Control
from filejobs.jobs.inline import run_inline, runs_inline
from filejobs.jobs.messages import Done, RunRequest
from filejobs.jobs.runner import run_job
from filejobs.processors import inspect as inspect_module
from filejobs.processors.inspect import Inspect
from filejobs.sniff import SNIFF_BYTES, sniff
from filejobs.testing import submit
from tests.conftest import files_under
from tests.jobs.conftest import App
from tests.jobs.helpers import row
from tests.sample_processors import WHERE_GATE, WHERE_HELD, Where, WhereHeavy
from tests.tus import helpers as tus

INSPECT = "filejobs.processors.inspect:Inspect"


@pytest.fixture
def app(tmp_path: Path, app_builder: Callable[..., App]) -> Callable[..., App]:
    """``app(name, **settings)`` → (client, services, burst worker), each with its own data dir."""

    def build(name: str = "data", **overrides: Any) -> App:
        return app_builder(tmp_path / name, **overrides)

    return build


def run_one(app: App, content: bytes, **kwargs: Any) -> dict[str, Any]:
    """Submit ``content``, run it in a worker thread's context; the job's body, and under
    ``"used_child"`` whether that context started a child."""
    client, _, worker = app
    job_id = submit(client, content, **kwargs)["id"]
    ctx = worker.context(0)
    try:
        assert run_job(job_id, ctx).status is not None
        used_child = ctx.child.pid is not None
    finally:
        ctx.child.kill()
    body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return {**body, "used_child": used_child}


INPUTS = {
    "text": (b"The quick brown fox\njumps over\n\nthe lazy dog", "notes.txt", "text/plain"),
    "binary": (bytes(range(256)) * 64, "blob.bin", "application/octet-stream"),
    "latin-1": ("Grüße aus Köln, ça va? Ñandú\nzweite Zeile\n".encode("latin-1"), "old.txt", "text/plain"),
    "utf-16": ("a line\nanother line here\n".encode("utf-16"), "wide.txt", "text/plain"),
}


@pytest.mark.parametrize("kind", list(INPUTS))
def test_inspect_gives_the_same_result_inline_and_in_the_child(app: Any, kind: str) -> None:
    content, name, content_type = INPUTS[kind]
    inline = run_one(app("inline"), content, name=name, content_type=content_type)
    child = run_one(app("child", inline_max_bytes=0), content, name=name, content_type=content_type)
    assert inline["status"] == child["status"] == "succeeded"
    assert (inline["used_child"], child["used_child"]) == (False, True)
    assert inline["result"] == child["result"]
    assert inline["result"]["size"] == len(content)
    assert inline["progress"] == child["progress"] == 1.0


def test_inspect_takes_the_type_sniffed_at_upload_by_every_way_a_job_gets_its_file(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's ``file_content_type`` is what ``sniff`` says of its first SNIFF_BYTES, whether the
    file came in a form, by tus, or by hash (the stored content's): ``inspect`` reports it as its own
    sniff would, without sniffing again (here it cannot: its ``sniff`` raises)."""
    client, services, worker = app()
    long_csv = b"".join(b"%d,%d,x\n" % (n, n * n) for n in range(12_000)) + b"\x00 binary tail"
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    assert len(long_csv) > SNIFF_BYTES
    assert sniff(long_csv) != sniff(long_csv[:SNIFF_BYTES])  # the first SNIFF_BYTES decide

    def no_sniff(sample: bytes) -> str:
        raise AssertionError("sniffed again")

    monkeypatch.setattr(inspect_module, "sniff", no_sniff)
    ids = {"form": submit(client, long_csv, name="t.csv")["id"]}
    ids["png"] = submit(client, png, name="p.bin")["id"]
    url = tus.created(client, len(png), filename="again.png")
    ids["tus"] = tus.patch(client, url, 0, png).headers["filejobs-job"].rsplit("/", 1)[1]
    by_hash = {"file_sha256": hashlib.sha256(long_csv).hexdigest(), "reuse": False}
    answer = client.post("/v1/jobs/by-hash", json={"items": [by_hash]})
    ids["by hash"] = answer.json()["items"][0]["job"]["id"]
    ctx = worker.context(0)
    try:
        statuses = {name: run_job(job_id, ctx).status for name, job_id in ids.items()}
        assert statuses == dict.fromkeys(ids, "succeeded")
        assert ctx.child.pid is None  # all ran in this thread, where ``sniff`` is patched
    finally:
        ctx.child.kill()
    found = {name: row(services.db, job_id).result["mime_type"] for name, job_id in ids.items()}
    csv_type, png_type = sniff(long_csv[:SNIFF_BYTES]), sniff(png)
    assert found == {"form": csv_type, "png": png_type, "tus": png_type, "by hash": csv_type}


@pytest.mark.parametrize("content", [b"", b"one line\n", bytes(range(256)), "café\n".encode("cp1252")])
def test_the_same_request_gives_the_same_reply_inline_and_in_the_child(
    child: ChildProcess, tmp_path: Path, content: bytes
) -> None:
    """Below the API (which refuses empty uploads): the one request, both ways."""
    source = tmp_path / "input"
    source.write_bytes(content)
    request = RunRequest(spec=INSPECT, input=str(source), output_dir=str(tmp_path))
    inline = run_inline(request, tick=lambda p, m: Control.CONTINUE, timeout=60)
    in_child = child.run(request, tick=lambda p, m: Control.CONTINUE, timeout=60, cancel_grace=1)
    assert inline == in_child
    assert inline.done.result["size"] == len(content)


def test_where_it_runs_follows_the_limit_the_declaration_and_the_setting(app: Any) -> None:
    me = os.getpid()
    small = app("small", inline_max_bytes=16)
    assert run_one(small, b"x" * 16, processor="where")["result"]["pid"] == me  # at the limit: here
    assert run_one(small, b"x" * 17, processor="where")["result"]["pid"] != me  # above: a child
    assert run_one(small, b"x", processor="where-heavy")["result"]["pid"] != me  # not light: a child
    off = app("off", inline_max_bytes=0)
    assert run_one(off, b"x", processor="where")["result"]["pid"] != me  # 0: never inline


def test_a_worker_running_only_inline_jobs_starts_no_child(app: Any) -> None:
    client, _, worker = app()
    ctx = worker.context(0)
    ids = [submit(client, f"file {i}\n".encode())["id"] for i in range(3)]
    assert [run_job(job_id, ctx).status for job_id in ids] == ["succeeded"] * 3
    assert ctx.child.pid is None
    big = submit(client, b"y" * 64, processor="where")["id"]
    ctx.settings = ctx.settings.model_copy(update={"inline_max_bytes": 32})
    try:
        assert run_job(big, ctx).status == "succeeded"
        assert ctx.child.pid is not None
        assert row(ctx.db, big).result == {"pid": ctx.child.pid, "size": 64}
    finally:
        ctx.child.kill()


def test_runs_inline_rules() -> None:
    assert runs_inline(Inspect, 1024, 1024)
    assert not runs_inline(Inspect, 1025, 1024)
    assert not runs_inline(Inspect, 0, 0)
    assert not runs_inline(WhereHeavy, 1, 1024)
    assert runs_inline(Where, 0, 1)


@pytest.mark.parametrize("fail", ["error", "bug"])
def test_a_failing_light_processor_fails_its_job_as_in_the_child(app: Any, fail: str) -> None:
    inline_app = app("inline")
    client, _, worker = inline_app
    failing = submit(client, b"data", processor="where", params={"fail": fail})["id"]
    after = submit(client, b"data", processor="where")["id"]
    assert worker.drain() == 2  # the thread survives the failure and runs the next job
    inline = client.get(f"/v1/jobs/{failing}").json()
    assert client.get(f"/v1/jobs/{after}").json()["result"]["pid"] == os.getpid()
    child = run_one(app("child"), b"data", processor="where-heavy", params={"fail": fail})
    assert inline["status"] == child["status"] == "failed"
    assert inline["error"] == child["error"]
    if fail == "error":
        assert inline["error"]["code"] == "where_refused"
        assert inline["error"]["message"] == "refused on purpose"
    else:
        assert inline["error"]["code"] == "processor_crashed"
        assert inline["error"]["message"] == "The processor failed unexpectedly (RuntimeError)."
        assert "secret" not in str(inline)


@pytest.fixture
def gate() -> Iterator[None]:
    WHERE_HELD.clear()
    WHERE_GATE.clear()
    yield
    WHERE_GATE.set()


@pytest.mark.parametrize("how", ["cancel", "delete"])
def test_a_job_cancelled_or_deleted_while_it_runs_inline_leaves_nothing(
    app: Any, gate: None, how: str
) -> None:
    client, services, worker = app()
    data_dir = services.settings.data_dir
    job_id = submit(client, b"payload", processor="where", params={"write": True, "hold": True})["id"]
    ctx = worker.context(0)
    ran: list[Any] = []
    thread = threading.Thread(target=lambda: ran.append(run_job(job_id, ctx)), daemon=True)
    thread.start()
    assert WHERE_HELD.wait(10), "the held job did not start"
    assert list((data_dir / "outputs" / job_id).rglob("where.txt"))  # its output is written
    if how == "cancel":
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    else:
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    WHERE_GATE.set()
    thread.join(10)
    assert not thread.is_alive()
    assert ran[0].status is None  # no longer ours
    assert ctx.child.pid is None  # it ran here, not in a child
    assert not (data_dir / "outputs" / job_id).exists()
    if how == "cancel":
        assert row(services.db, job_id).status == "cancelled"
        assert row(services.db, job_id).result is None
    else:
        assert repository.get_job(services.db, job_id) is None
        assert [path for path in files_under(data_dir) if job_id in path.as_posix()] == []


def test_progress_and_cancel_reach_the_ticker(tmp_path: Path) -> None:
    """``run_inline`` asks the job's ticker when the processor reports or checks, as the child's
    parent does, and stops on its answer: cancelled, or stopped (shutdown)."""
    source = tmp_path / "in.bin"
    source.write_bytes(b"z" * (3 * 2**20))  # three chunks: progress at 1/3 and 2/3
    request = RunRequest(spec=INSPECT, input=str(source), output_dir=str(tmp_path))
    seen: list[float | None] = []

    def tick(progress: float | None, message: str | None) -> str:
        seen.append(progress)
        return Control.CONTINUE

    outcome = run_inline(request, tick=tick, timeout=60)
    assert isinstance(outcome.reply, Done)
    assert outcome.reply.result["size"] == 3 * 2**20
    assert seen
    assert all(p is not None and 0 < p < 1 for p in seen)  # a bare 1.0 is not reported

    for answer, kind in ((Control.CANCEL, "cancelled"), (Control.STOP, "stopped")):
        assert run_inline(request, tick=lambda p, m, a=answer: a, timeout=60).kind == kind


def test_an_inline_run_past_its_time_limit_fails_timeout(tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(b"z" * 100)
    request = RunRequest(spec=INSPECT, input=str(source), output_dir=str(tmp_path))
    outcome = run_inline(request, tick=lambda p, m: Control.CONTINUE, timeout=1e-9)
    assert outcome.kind == "timeout"
    assert outcome.failed.code == "timeout"
