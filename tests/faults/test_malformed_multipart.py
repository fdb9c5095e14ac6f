"""The malformed-multipart corpus against a real ``filejobs serve`` process.

One server for the module (``FILEJOBS_WORKERS=0``: nothing processes what gets in;
``FILEJOBS_MAX_UPLOAD_BYTES`` = 32 MiB, see :mod:`tests.faults.multipart_corpus`). For every case of
the corpus, sent over a raw socket as the case says:

- the answer is the expected 4xx (never a 5xx, never a hang), within :data:`ANSWER_WITHIN`, as
  ``application/problem+json`` with no trace or server path in it (for a request whose HTTP
  framing is invalid, the HTTP protocol's "Malformed HTTP request"); a client that hangs up gets
  no answer, and the server is fine afterwards;
- meanwhile a prober thread's ``GET /healthz`` and ``GET /v1/jobs`` answer within
  :data:`PROBE_WITHIN`;
- the server's RSS stays within :data:`RSS_HEADROOM` of its idle RSS (sampled every 20 ms);
- afterwards ``data/uploads``, ``data/outputs`` and ``data/tmp`` are empty, no job row exists, and
  the server log has no traceback.

A few hostile bodies are then sent slowly (a couple of seconds each) while the test itself keeps
asking for ``/healthz`` and ``/v1/jobs``; the module ends with one valid upload that still gets 202.
Timings, statuses and RSS are printed as a table at the end (``pytest -s`` shows it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from filejobs.testing import Server
from tests.faults.multipart_corpus import (
    BY_NAME,
    CLOSE,
    CORPUS,
    MALFORMED_HTTP_TITLE,
    MAX_UPLOAD_BYTES,
    MULTIPART,
    Case,
    KiB,
    body_of,
    file_part,
)
from tests.faults.rawhttp import Exchange, exchange
from tests.uploads.helpers import kept_in_database, stored_content

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
#: Every answer comes within this many seconds of the first byte sent, even after 20 MiB.
ANSWER_WITHIN = 10.0
#: What a liveness probe may take while a hostile request is being handled.
PROBE_WITHIN = 1.0
#: How far the server's RSS may rise over its idle RSS.
RSS_HEADROOM = 64 * MiB
#: How long the server may take to remove what a refused upload left (it notices a hang-up late).
CLEANUP_WITHIN = 5.0
#: Things that must never appear in an answer.
LEAKS = ("Traceback", 'File "', "python_multipart", "site-packages", '.py"', "Exception")
SLOW_CASES = [
    "preamble-crlf-20mib",
    "epilogue-20mib",
    "closing-boundary-never-appears",
    "file-over-limit-chunked",
]
SLOW_SECONDS = 2.5


# ---- watching the server: RSS and liveness --------------------------------------------------


class RssSampler(threading.Thread):
    """Samples the server's RSS (its process and any children) every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def rss(self) -> int:
        total: int = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append((time.monotonic(), self.rss()))
            except psutil.Error:
                return
            self._halt.wait(0.02)

    def peak(self, since: float, until: float | None = None) -> int:
        """The highest RSS seen from ``since`` to ``until`` (and the last sample before ``since``:
        a request of a few milliseconds may fall between two samples)."""
        end = until if until is not None else float("inf")
        samples = list(self.samples)
        before = [rss for at, rss in samples if at < since][-1:]
        return max([*before, *(rss for at, rss in samples if since <= at <= end)], default=0)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


@dataclass
class Probe:
    path: str
    started: float
    ended: float
    status: int | None
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.ended - self.started


class Prober(threading.Thread):
    """``GET /healthz`` and ``GET /v1/jobs`` in turn, all the time, each timed."""

    def __init__(self, base_url: str) -> None:
        super().__init__(name="prober", daemon=True)
        self.base_url = base_url
        self.probes: list[Probe] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=PROBE_WITHIN * 5) as client:
            while not self._halt.is_set():
                for path in ("/healthz", "/v1/jobs"):
                    self.probes.append(probe(client, path))
                self._halt.wait(0.05)

    def during(self, start: float, end: float) -> list[Probe]:
        return [p for p in list(self.probes) if p.started <= end and p.ended >= start]

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def probe(client: httpx.Client, path: str) -> Probe:
    started = time.monotonic()
    try:
        status: int | None = client.get(path).status_code
        error = None
    except httpx.HTTPError as exc:
        status, error = None, repr(exc)
    return Probe(path, started, time.monotonic(), status, error)


def slow_probes(probes: list[Probe]) -> list[str]:
    return [
        f"{p.path}: {p.status or p.error} after {p.latency:.2f} s"
        for p in probes
        if p.status != 200 or p.latency > PROBE_WITHIN
    ]


# ---- the target -------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    status: str
    answered_after: float | None
    total: float
    sent_mib: float
    rss_over_idle_mib: float
    probes: int
    worst_probe: float


@dataclass
class Target:
    server: Server
    data_dir: Path
    sampler: RssSampler
    prober: Prober
    idle_rss: int
    log_offset: int = 0
    rows: list[Row] = field(default_factory=list)

    def client(self) -> httpx.Client:
        return self.server.client(timeout=10.0)

    def send(self, case: Case, **kwargs: Any) -> Exchange:
        options: dict[str, Any] = {
            "mode": case.mode,
            "stop_after": case.stop_after,
            "stall": case.stall,
            "timeout": ANSWER_WITHIN + 5,
        }
        options.update(kwargs)
        return exchange("127.0.0.1", self.server.port, case.head(), case.wire_body(), **options)

    def new_log(self) -> str:
        text = self.server.log_text()
        new, self.log_offset = text[self.log_offset :], len(text)
        return new


def leftovers(data_dir: Path) -> list[str]:
    """The stored files' paths under the data directory, and the keys of small uploads kept in its
    database (``inline/<job id>``)."""
    files = [
        str(p.relative_to(data_dir))
        for sub in ("uploads", "outputs", "tmp", "scratch")
        for p in (data_dir / sub).rglob("*")
        if p.is_file()
    ]
    return sorted([*files, *kept_in_database(data_dir)])


def wait_clean(target: Target) -> list[str]:
    """Wait until nothing is left under uploads/outputs/tmp; what is still there after the wait."""
    deadline = time.monotonic() + CLEANUP_WITHIN
    while (left := leftovers(target.data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def job_ids(target: Target) -> list[str]:
    with target.client() as client:
        response = client.get("/v1/jobs", params={"limit": 500})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("faults-multipart")
    data_dir = root / "data"
    server = Server(
        data_dir,
        env={"FILEJOBS_WORKERS": "0", "FILEJOBS_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)},
        log_path=root / "server.log",
    )
    with server:
        sampler = RssSampler(server.pid)
        prober = Prober(server.base_url)
        # Warm up every code path a case may take (imports, sniffing, the database) before the
        # idle RSS is taken: one accepted upload (then deleted) and one refused.
        with server.client() as client:
            accepted = client.post("/v1/jobs", files={"file": ("warm.txt", b"warm up\n", "text/plain")})
            assert accepted.status_code == 202, accepted.text
            assert client.delete(f"/v1/jobs/{accepted.json()['id']}").status_code == 204
            assert client.post("/v1/jobs", content=b"x").status_code == 415
        sampler.start()
        time.sleep(0.5)
        target = Target(server, data_dir, sampler, prober, idle_rss=sampler.peak(0.0))
        target.new_log()
        prober.start()
        try:
            yield target
        finally:
            prober.stop()
            sampler.stop()
            _print_report(target)
    print(f"----- server log (tail) -----\n{server.log_tail(40)}")


def _print_report(target: Target) -> None:
    peak = max((rss for _, rss in target.sampler.samples), default=0)
    print(
        f"\n----- malformed multipart corpus: idle RSS {target.idle_rss / MiB:.1f} MiB, "
        f"peak {peak / MiB:.1f} MiB (+{(peak - target.idle_rss) / MiB:.1f}) -----"
    )
    print(f"{'case':48} {'answer':>7} {'after s':>8} {'total s':>8} {'sent MiB':>9} {'+RSS MiB':>9} probes")
    for row in target.rows:
        after = f"{row.answered_after:.3f}" if row.answered_after is not None else "-"
        print(
            f"{row.case:48} {row.status:>7} {after:>8} {row.total:>8.3f} {row.sent_mib:>9.1f} "
            f"{row.rss_over_idle_mib:>9.1f} {row.probes:>3} (worst {row.worst_probe:.3f} s)"
        )


# ---- assertions -------------------------------------------------------------------------------


def check_answer(case: Case, outcome: Exchange, data_dir: Path) -> None:
    answer_required = case.mode in ("send", "headers")
    if answer_required:
        assert not outcome.timed_out, f"no answer within {ANSWER_WITHIN + 5:g} s"
        assert not outcome.closed_without_answer, "the server closed the connection without answering"
        assert outcome.answered_after is not None
        assert outcome.answered_after < ANSWER_WITHIN, f"answered after {outcome.answered_after:.2f} s"
    if outcome.status is None:
        return
    assert outcome.status in case.expect, (
        f"expected {sorted(case.expect) or 'no answer'}, got {outcome.status}: {outcome.body[:500]!r}"
    )
    assert outcome.status < 500
    text = outcome.body.decode("utf-8", errors="replace")
    for leak in (*LEAKS, str(data_dir), str(data_dir.resolve())):
        assert leak not in text, f"{leak!r} in the answer: {text[:500]}"
    if outcome.status == 202:
        return
    assert outcome.content_type == "application/problem+json", (outcome.content_type, text[:300])
    problem = json.loads(outcome.body)
    assert problem["status"] == outcome.status
    assert {"type", "title", "status", "detail"} <= problem.keys()
    from_http = problem["title"] == MALFORMED_HTTP_TITLE
    if case.layer == "http" or (case.layer == "either" and from_http):
        assert from_http, problem
        assert outcome.status == 400
        return
    if case.detail is not None:
        assert case.detail.lower() in problem["detail"].lower(), problem["detail"]


def check_accepted(target: Target, case: Case, outcome: Exchange) -> str:
    job = json.loads(outcome.body)
    job_id: str = job["id"]
    assert job["file"]["name"] == case.accepted_name
    name_bytes = job["file"]["name"].encode("utf-8")
    assert len(name_bytes) <= 255
    assert not any(ch in job["file"]["name"] for ch in "/\\\x00")
    # The client's name is only a label: the upload is kept under its job's id (a small one in the
    # database: inline/<job id>), and nothing was written anywhere its name points to.
    assert leftovers(target.data_dir) in ([f"inline/{job_id}"], [f"uploads/{job_id}"])
    root = target.data_dir.parent
    for name in ("passwd", "shadow", "evil.php", "x.txt"):
        assert not list(root.rglob(name)), f"{name} appeared under {root}"
    return job_id


def _params() -> list[Any]:
    params = []
    for case in CORPUS:
        marks = [pytest.mark.xfail(strict=True, reason=case.known_bug)] if case.known_bug else []
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


# ---- the corpus -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params())
def test_hostile_request_is_refused_quickly_and_leaves_nothing(target: Target, case: Case) -> None:
    start = time.monotonic()
    outcome = target.send(case)
    end = time.monotonic()
    created: str | None = None
    try:
        if outcome.status == 202:
            created = json.loads(outcome.body)["id"]
        check_answer(case, outcome, target.data_dir)
        if case.accepted_name is not None:
            check_accepted(target, case, outcome)
    finally:
        if created is not None:
            with target.client() as client:
                assert client.delete(f"/v1/jobs/{created}").status_code == 204
        _record(target, case, outcome, start, end)

    assert target.server.returncode is None, "the server died"
    assert wait_clean(target) == [], "files were left behind"
    assert job_ids(target) == []
    late = time.monotonic()
    probes = target.prober.during(start, late)
    assert slow_probes(probes) == [], "the service was slow to answer others meanwhile"
    rise = max(target.sampler.peak(start, late), target.sampler.rss()) - target.idle_rss
    assert rise < RSS_HEADROOM, f"RSS rose {rise / MiB:.1f} MiB over idle"
    log = target.new_log()
    assert "Traceback" not in log, log[-3000:]
    assert "Exception in ASGI application" not in log


def _record(target: Target, case: Case, outcome: Exchange, start: float, end: float) -> None:
    probes = target.prober.during(start, end)
    status = str(outcome.status) if outcome.status is not None else "none"
    if outcome.status is not None and MALFORMED_HTTP_TITLE.encode() in outcome.body:
        status += "*"  # answered by the HTTP protocol, not the app
    target.rows.append(
        Row(
            case=case.name,
            status=status,
            answered_after=outcome.answered_after,
            total=outcome.total,
            sent_mib=outcome.sent / MiB,
            rss_over_idle_mib=(
                max(target.sampler.peak(start, time.monotonic()), target.sampler.rss()) - target.idle_rss
            )
            / MiB,
            probes=len(probes),
            worst_probe=max((p.latency for p in probes), default=0.0),
        )
    )


# ---- responsiveness while a hostile body streams in slowly -----------------------------------


@pytest.mark.parametrize("name", SLOW_CASES)
def test_others_are_served_while_a_hostile_body_streams_slowly(target: Target, name: str) -> None:
    case = BY_NAME[name]
    chunks = sum(1 for _ in case.wire_body())
    result: dict[str, Exchange] = {}
    sender = threading.Thread(
        target=lambda: result.setdefault("outcome", target.send(case, throttle=SLOW_SECONDS / chunks)),
        daemon=True,
    )
    probes: list[Probe] = []
    start = time.monotonic()
    sender.start()
    with httpx.Client(base_url=target.server.base_url, timeout=PROBE_WITHIN * 5) as client:
        while sender.is_alive():
            probes += [probe(client, "/healthz"), probe(client, "/v1/jobs")]
            time.sleep(0.05)
    sender.join()
    outcome = result["outcome"]
    label = dataclasses.replace(case, name=f"{name} (slow, ~{SLOW_SECONDS:g} s)")
    _record(target, label, outcome, start, time.monotonic())

    check_answer(case, outcome, target.data_dir)
    assert outcome.total >= SLOW_SECONDS * 0.5, "the body was not sent slowly"
    assert len(probes) >= 10
    assert slow_probes(probes) == []
    assert wait_clean(target) == []
    assert job_ids(target) == []


def test_a_stalled_upload_holds_only_its_own_temp_file_until_the_client_leaves(target: Target) -> None:
    case = BY_NAME["content-length-larger-than-body-stall"]
    seen: list[list[str]] = []

    def watch() -> None:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seen.append(leftovers(target.data_dir))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    outcome = target.send(case, stall=2.5)
    watcher.join()
    assert outcome.status is None, "a body still to come must not be answered"
    # While the client stalled, the 3 MiB it sent were in one temp file (and nowhere else) ...
    assert any(files and all(f.startswith("tmp/") for f in files) for files in seen), seen[-3:]
    assert all(len(files) <= 1 for files in seen)
    # ... which is gone once it hung up.
    assert wait_clean(target) == []
    assert job_ids(target) == []


# ---- known gaps (strict xfail: they flip to failures once fixed, so the mark gets removed) ----


def test_a_huge_content_type_does_not_block_the_event_loop(target: Target) -> None:
    case = Case(
        "content-type-4mib-of-semicolons",
        "python-multipart CVE-2024-24762 GHSA-2jv5-9r88-3w3p (shape)",
        lambda: iter(()),
        frozenset({400, 413, 431}),
        headers=((b"Content-Type", MULTIPART + b"; " + b";" * (4 * MiB)),),
    )
    result: dict[str, Exchange] = {}
    sender = threading.Thread(target=lambda: result.setdefault("outcome", target.send(case)), daemon=True)
    probes: list[Probe] = []
    start = time.monotonic()
    sender.start()
    with httpx.Client(base_url=target.server.base_url, timeout=30) as client:
        while sender.is_alive():
            probes.append(probe(client, "/healthz"))
            time.sleep(0.05)
    sender.join()
    _record(target, case, result["outcome"], start, time.monotonic())
    assert result["outcome"].status in case.expect
    assert slow_probes(probes) == []


# ---- request heads: bounded by filejobs serve itself (service/filejobs/http_protocol.py) -------------------

#: How far the server's RSS may rise while refusing one runaway header, and twenty at once.
HEAD_RSS_ONE = 5 * MiB
HEAD_RSS_TWENTY = 20 * MiB
RUNAWAY_HEAD = b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Runaway: "


def runaway_header(size: int = 48 * MiB) -> Iterator[bytes]:
    """One header line of ``size`` bytes (after :data:`RUNAWAY_HEAD`), then the rest of a head."""
    block = b"h" * (64 * 1024)
    for _ in range(size // len(block)):
        yield block
    yield b"\r\nContent-Type: " + MULTIPART + b"\r\nContent-Length: 0\r\n\r\n"


def check_refused_head(outcome: Exchange) -> None:
    """431 problem+json (or the connection closed) long before the 48 MiB were sent."""
    if outcome.closed_without_answer:
        return
    assert outcome.status == 431, (outcome.status, outcome.body[:300])
    assert outcome.content_type == "application/problem+json"
    assert json.loads(outcome.body)["status"] == 431
    # It stopped reading at the limit: the client could send only what the socket buffers hold.
    assert outcome.sent < 16 * MiB, f"{outcome.sent / MiB:.1f} MiB sent"


def test_a_runaway_request_header_is_refused_with_bounded_memory(target: Target) -> None:
    before = target.sampler.rss()  # growth from here: earlier cases of the module may have grown the heap
    start = time.monotonic()
    outcome = exchange("127.0.0.1", target.server.port, RUNAWAY_HEAD, runaway_header(), timeout=60)
    end = time.monotonic()
    rise = target.sampler.peak(start, end + 0.2) - before
    row = Row("request-header-48mib", str(outcome.status), outcome.answered_after, outcome.total, 0, 0, 0, 0)
    row.sent_mib, row.rss_over_idle_mib = outcome.sent / MiB, rise / MiB
    target.rows.append(row)
    assert outcome.status == 431, outcome
    check_refused_head(outcome)
    assert rise <= HEAD_RSS_ONE, f"RSS rose {rise / MiB:.1f} MiB over idle"


def test_twenty_runaway_headers_at_once_cost_little_memory_and_health_still_answers(target: Target) -> None:
    """Twenty connections each send the start of a 48 MiB header line and hold it there while
    ``/healthz`` is asked; then all send on at once and get 431 (or are closed)."""
    outcomes: list[Exchange] = []
    started = threading.Semaphore(0)
    go = threading.Event()

    def held_runaway() -> Iterator[bytes]:
        chunks = runaway_header()
        yield next(chunks)[: 8 * KiB]  # under MAX_HEADER_LINE_BYTES: the connection is held open
        started.release()
        go.wait(30)
        yield from chunks

    def send() -> None:
        head = RUNAWAY_HEAD
        outcomes.append(exchange("127.0.0.1", target.server.port, head, held_runaway(), timeout=60))

    senders = [threading.Thread(target=send, daemon=True) for _ in range(20)]
    before = target.sampler.rss()
    start = time.monotonic()
    for sender in senders:
        sender.start()
    for _ in senders:
        assert started.acquire(timeout=30)
    with httpx.Client(base_url=target.server.base_url, timeout=30) as client:
        probes = [probe(client, "/healthz") for _ in range(5)]  # 20 heads held open
        go.set()
        while any(sender.is_alive() for sender in senders):
            probes.append(probe(client, "/healthz"))
        probes.append(probe(client, "/healthz"))
    end = time.monotonic()
    rise = target.sampler.peak(start, end + 0.2) - before
    row = Row("request-header-48mib-x20", "431", None, end - start, 0, 0, len(probes), 0)
    row.sent_mib, row.rss_over_idle_mib = sum(o.sent for o in outcomes) / MiB, rise / MiB
    row.worst_probe = max(p.latency for p in probes)
    target.rows.append(row)
    assert len(outcomes) == 20
    for outcome in outcomes:
        check_refused_head(outcome)
    assert sum(o.status == 431 for o in outcomes) >= 1
    assert rise <= HEAD_RSS_TWENTY, f"RSS rose {rise / MiB:.1f} MiB over idle"
    assert slow_probes(probes) == []


def test_a_request_head_of_63_kib_is_still_accepted(target: Target) -> None:
    """Up to MAX_HEADER_BYTES (64 KiB) in lines of up to MAX_HEADER_LINE_BYTES (16 KiB) get in."""
    content = b"a head of 63 KiB\n"
    case = Case("valid-upload", "-", body_of(file_part(content, "big-head.txt") + CLOSE), frozenset({202}))
    head = case.head()
    filler = [b"X-Filler-%d: " % i + b"f" * (15 * KiB) + b"\r\n" for i in range(4)]
    head = head[:-2] + b"".join(filler)
    head += b"X-Last: " + b"l" * (63 * KiB - len(head) - len(b"X-Last: \r\n\r\n")) + b"\r\n\r\n"
    assert len(head) == 63 * KiB
    outcome = exchange("127.0.0.1", target.server.port, head, case.wire_body(), timeout=30)
    assert outcome.status == 202, outcome.body[:300]
    with target.client() as client:
        assert client.delete(f"/v1/jobs/{json.loads(outcome.body)['id']}").status_code == 204


# ---- and then the service still works ---------------------------------------------------------


def test_after_the_corpus_a_valid_upload_still_gets_202(target: Target) -> None:
    assert target.server.returncode is None
    assert wait_clean(target) == []
    assert job_ids(target) == []
    content = b"still here after the corpus\n"
    case = Case("valid-upload", "-", body_of(file_part(content, "ok.txt") + CLOSE), frozenset({202}))
    outcome = target.send(case)
    assert outcome.status == 202, outcome.body
    job = json.loads(outcome.body)
    assert job["file"]["size"] == len(content)
    assert job["file"]["name"] == "ok.txt"
    assert job_ids(target) == [job["id"]]
    assert leftovers(target.data_dir) == [f"inline/{job['id']}"]
    assert stored_content(target.data_dir, job["id"]) == content
    log = target.server.log_text()
    assert "Traceback" not in log
    idle_after = target.sampler.rss()
    assert idle_after - target.idle_rss < RSS_HEADROOM, f"RSS after the corpus: {idle_after / MiB:.1f} MiB"
