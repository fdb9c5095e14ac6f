"""An uploader that keeps a ledger while the service is killed under it, and the kill scenarios.

Shared by ``tests/faults/test_kill_ledger.py`` and ``scripts/kill_ledger.py``.

:class:`Uploader` is one client thread that uploads files (2 KiB, 64 KiB and 512 KiB in turn) one at
a time for as long as it runs. Each attempt is a new file with a unique name
(``ledger-000042.txt``), so a row in the jobs table can always be traced back to the attempt that
made it. The :class:`Ledger` records every attempt: ``accepted`` (a ``202`` and its job id),
``answered`` (any other status: the README promises such an upload leaves no row behind) or
``no answer`` (refused, reset, or cut off by a kill: the row may or may not exist). The ledger's
*epoch* counts the restarts: an attempt belongs to the epoch in which it started, so the one in
flight when the service died, and those refused while it was down, are the kill's.

:func:`run_local` and :func:`run_celery` kill the service at several moments while the uploader
runs (after a number of further ``202`` answers each time, or spread over a duration; always while
a job is running and, when the API dies, while an upload is on its way), restart it on the same
data, and let the uploader follow it to its new address. :func:`check` then waits until nothing is
queued or running, lists every row through the API and compares them with the ledger into a
:class:`Report`: every ``202`` must have a row that ended ``succeeded`` (lost = 0); a row the ledger
has no ``202`` for must come from a cut-off attempt, at most one per kill, and must have succeeded
too; nothing else may have made a row.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from filejobs.testing.processors import SLEEP
from filejobs.testing.waiting import wait_until as _wait_until

if TYPE_CHECKING:
    from filejobs.testing.cluster import Cluster
    from filejobs.testing.server import Server
    from filejobs.testing.worker import Worker

KiB = 1024
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACCEPTED, ANSWERED, NO_ANSWER = "accepted", "answered", "no answer"
#: Answers that mean "not now": the service's backpressure, or (409) another request with the same
#: Idempotency-Key still in progress. Expected, and no row behind them.
BACKPRESSURE = frozenset({409, 429, 503})
PREFIX = "ledger-"
#: The settings every kill scenario runs with: short leases and frequent sweeps for a fast recovery;
#: no backoff; attempts enough that a job killed (or slowed into a lease expiry) more than once still
#: ends (what is under test is that nothing is lost, not the attempt budget); and a shallow queue:
#: uploads beyond it are answered 503 (the service's own backpressure, which must leave no row
#: behind), so the backlog stays small and the jobs a kill interrupted run again soon.
FAST = {
    "lease_seconds": 2,
    "sweep_interval": 0.5,
    "retry_backoff": 0,
    "max_attempts": 10,
    "max_queue_depth": 10,
}

#: The local backend takes a killed server's jobs back at its restart (their owner's process is
#: gone), not by their leases; a longer lease there keeps a worker that is slow to start its
#: processor process on a loaded machine from losing its first job to a lease expiry.
LOCAL = {**FAST, "lease_seconds": 10}


def local_env(workers: int = 2) -> dict[str, str]:
    """The environment of a local-backend server for the kill scenario (the ``sleep`` processor
    loaded)."""
    env = {f"FILEJOBS_{key.upper()}": str(value) for key, value in LOCAL.items()}
    env.update({"FILEJOBS_WORKERS": str(workers), "FILEJOBS_PROCESSORS": SLEEP})
    return env


class ScenarioError(AssertionError):
    """A bounded wait of a scenario ran out (the service did not do what it should in time)."""


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.02) -> Any:
    return _wait_until(predicate, timeout=timeout, what=what, interval=interval, error=ScenarioError)


# ---- the ledger ---------------------------------------------------------------------------------


@dataclass
class Attempt:
    number: int
    name: str
    epoch: int
    started: float  # time.monotonic()
    ended: float = 0.0
    outcome: str = ""
    status_code: int | None = None
    job_id: str | None = None
    error: str | None = None


@dataclass
class Kill:
    """One kill -9: of what, when, and what it caught."""

    epoch: int  # this epoch's attempts started before it, or while the service was down after it
    what: str  # "server", "api" or a worker's name
    at: float  # time.monotonic()
    running: list[tuple[str, int]]  # (job id, attempt) of the jobs running at that moment
    in_flight: int | None = None  # the number of the attempt on its way at that moment, if any
    committed: bool = False  # that attempt's row was committed before the kill (no answer yet)
    restart_seconds: float = 0.0  # until the killed process (or its replacement) was ready
    recovery_seconds: float = 0.0  # until every job it was running ran again (or ended)


class Ledger:
    """Every upload attempt, thread-safe; ``wait_accepted`` blocks until enough ``202``s."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.kills: list[Kill] = []
        self.epoch = 0
        self._current: Attempt | None = None
        self._changed = threading.Condition()

    def begin(self, number: int, name: str) -> Attempt:
        with self._changed:
            attempt = Attempt(number=number, name=name, epoch=self.epoch, started=time.monotonic())
            self._current = attempt
            self._changed.notify_all()
            return attempt

    def end(self, attempt: Attempt, outcome: str, **values: Any) -> None:
        with self._changed:
            attempt.ended = time.monotonic()
            attempt.outcome = outcome
            for key, value in values.items():
                setattr(attempt, key, value)
            self.attempts.append(attempt)
            self._current = None
            self._changed.notify_all()

    def killed(self, what: str, running: list[tuple[str, int]]) -> Kill:
        """Record a kill that is about to happen (and the attempt on its way, if any)."""
        with self._changed:
            in_flight = self._current.number if self._current is not None else None
            kill = Kill(
                epoch=self.epoch, what=what, at=time.monotonic(), running=running, in_flight=in_flight
            )
            self.kills.append(kill)
            return kill

    def restarted(self) -> None:
        """The killed service is back: attempts from now on are the next epoch's (those that failed
        while it was down belong to the kill's epoch)."""
        with self._changed:
            self.epoch += 1

    def wait_in_flight(self, *, timeout: float) -> None:
        """Block until an upload is on its way (so that a kill now cuts it off somewhere)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._current is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ScenarioError(f"no upload started within {timeout:g} s")
                self._changed.wait(min(remaining, 1.0))

    def current(self) -> Attempt | None:
        """The attempt on its way, if any."""
        with self._changed:
            return self._current

    def accepted_count(self) -> int:
        with self._changed:
            return sum(1 for a in self.attempts if a.outcome == ACCEPTED)

    def wait_accepted(self, count: int, *, timeout: float) -> None:
        """Block until ``count`` attempts in all were answered ``202``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(1 for a in self.attempts if a.outcome == ACCEPTED) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ScenarioError(f"fewer than {count} uploads were accepted within {timeout:g} s")
                self._changed.wait(min(remaining, 1.0))

    def snapshot(self) -> list[Attempt]:
        with self._changed:
            return list(self.attempts)


# ---- the uploader -------------------------------------------------------------------------------


def file_content(name: str, size: int) -> bytes:
    line = f"{name}: uploaded by the kill ledger\n".encode()
    return (line * (size // len(line) + 1))[:size]


class Uploader:
    """One thread uploading a new small file after another to ``target()`` (read before every
    attempt: it follows a restarted server to its new port), recording each attempt in ``ledger``.

    ``pace``: seconds between the end of one attempt and the start of the next; ``0.1`` more after
    an attempt without answer, so a server that is down is not hammered, and ``Retry-After`` (at
    most 1 s) after a ``429``, ``503`` or ``409``.

    ``idempotent``: every upload carries an ``Idempotency-Key`` (its file name) and is sent again,
    the same, until it is accepted: an answer cut off by a kill is then recovered by the retry (a
    ``200`` replay of the job the first try made) instead of leaving a job nobody knows of.
    """

    def __init__(
        self,
        target: Callable[[], str],
        ledger: Ledger,
        *,
        processor: str = "sleep",
        params: str = '{"seconds": 0.2, "steps": 2}',
        sizes: tuple[int, ...] = (2 * KiB, 64 * KiB, 512 * KiB),
        pace: float = 0.02,
        timeout: float = 15.0,
        idempotent: bool = False,
    ) -> None:
        self.target = target
        self.idempotent = idempotent
        self.ledger = ledger
        self.form = {"processor": processor, "params": params}
        self.sizes = sizes
        self.pace = pace
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-uploader", daemon=True)
        self._crash: BaseException | None = None

    def start(self) -> Uploader:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Let the attempt on its way finish, then stop (bounded by the request timeout)."""
        self._stop.set()
        self._thread.join(self.timeout + 10)
        if self._thread.is_alive():
            raise ScenarioError("the uploader did not stop")
        if self._crash is not None:
            raise ScenarioError(f"the uploader crashed: {self._crash!r}") from self._crash

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=self.timeout) as client:
                number, accepted = 0, True
                while not self._stop.is_set():
                    if accepted or not self.idempotent:
                        number += 1  # a new file; else the same one again, with the same key
                    accepted, hold_back = self._attempt(client, number)
                    self._stop.wait(self.pace + hold_back)
        except BaseException as exc:  # reported by stop()
            self._crash = exc

    def _attempt(self, client: httpx.Client, number: int) -> tuple[bool, float]:
        """One upload: was it accepted, and how long to hold back before the next."""
        name = f"{PREFIX}{number:06d}.txt"
        attempt = self.ledger.begin(number, name)
        size = self.sizes[number % len(self.sizes)]
        files = {"file": (name, file_content(name, size), "text/plain")}
        headers = {"Idempotency-Key": name} if self.idempotent else {}
        try:
            response = client.post(f"{self.target()}/v1/jobs", files=files, data=self.form, headers=headers)
        except httpx.TransportError as exc:
            self.ledger.end(attempt, NO_ANSWER, error=f"{type(exc).__name__}: {exc}")
            return False, 0.1
        if response.status_code == 202 or (self.idempotent and response.status_code == 200):
            job_id = response.json()["id"]
            self.ledger.end(attempt, ACCEPTED, status_code=response.status_code, job_id=job_id)
            return True, 0.0
        self.ledger.end(attempt, ANSWERED, status_code=response.status_code, error=response.text[:300])
        if response.status_code in BACKPRESSURE:
            retry_after = response.headers.get("Retry-After", "1")
            return False, min(1.0, float(retry_after)) if retry_after.isdigit() else 1.0
        return False, 0.0


# ---- reading the service back -------------------------------------------------------------------


def list_jobs(client: httpx.Client, base_url: str, **filters: str) -> list[dict[str, Any]]:
    """Every job the API lists (all pages)."""
    jobs: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": 500, **filters}
    while True:
        response = client.get(f"{base_url}/v1/jobs", params=params)
        response.raise_for_status()
        page = response.json()
        jobs.extend(page["items"])
        if not page["next_cursor"]:
            return jobs
        params["cursor"] = page["next_cursor"]


def running_jobs(client: httpx.Client, base_url: str) -> list[tuple[str, int]]:
    response = client.get(f"{base_url}/v1/jobs", params={"status": "running", "limit": 50})
    response.raise_for_status()
    return [(job["id"], job["attempts"]) for job in response.json()["items"]]


def drain(base_url: str, *, timeout: float) -> float:
    """Wait until no job is queued or running, long-polling one unfinished job at a time; return
    the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    with httpx.Client(timeout=40.0) as client:
        while True:
            pending = [
                job
                for status in ("running", "queued")
                for job in client.get(f"{base_url}/v1/jobs", params={"status": status, "limit": 1})
                .raise_for_status()
                .json()["items"]
            ]
            if not pending:
                return time.monotonic() - started
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ScenarioError(f"jobs still unfinished after {timeout:g} s, e.g. {pending[0]}")
            # Long-poll that job until it changes (the answer is a 304 or its new state).
            url = f"{base_url}/v1/jobs/{pending[0]['id']}"
            etag = client.get(url).raise_for_status().headers["ETag"]
            client.get(url, params={"wait": min(5.0, max(0.1, remaining))}, headers={"If-None-Match": etag})


def reclaimed(base_url: str, jobs: Iterable[tuple[str, int]], *, since: float, timeout: float) -> float:
    """Seconds from ``since`` until each ``(job id, attempt)`` runs a later attempt or has ended."""
    pending = dict(jobs)

    def done() -> bool:
        with httpx.Client(timeout=10.0) as client:
            for job_id, attempt in list(pending.items()):
                job = client.get(f"{base_url}/v1/jobs/{job_id}").raise_for_status().json()
                if job["status"] in TERMINAL or (job["status"] == "running" and job["attempts"] > attempt):
                    del pending[job_id]
        return not pending

    wait_until(done, timeout=timeout, what=f"the killed jobs {sorted(pending)} to run again", interval=0.1)
    return time.monotonic() - since


# ---- the verdict --------------------------------------------------------------------------------


@dataclass
class Report:
    backend: str
    seconds: float
    attempts: list[Attempt]
    kills: list[Kill]
    rows: dict[str, dict[str, Any]]  # job id → the job as the API lists it
    drain_seconds: float
    problems: list[str] = field(default_factory=list)
    orphans: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name → job, no 202 for it

    @property
    def accepted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.outcome == ACCEPTED]

    def cut_off(self) -> Counter[int]:
        """Per epoch (kill), the rows made by attempts that got no answer."""
        by_name = {a.name: a for a in self.attempts}
        return Counter(by_name[name].epoch for name in self.orphans)

    def summary(self) -> str:
        outcomes = Counter(a.outcome for a in self.attempts)
        answered = Counter(a.status_code for a in self.attempts if a.outcome == ANSWERED)
        statuses = Counter(job["status"] for job in self.rows.values())
        tries = Counter(job["attempts"] for job in self.rows.values())
        cut = self.cut_off()
        replays = sum(1 for a in self.accepted if a.status_code == 200)
        lines = [
            f"{self.backend}: {len(self.attempts)} uploads of {len({a.name for a in self.attempts})} files "
            f"in {self.seconds:.1f} s: {outcomes[ACCEPTED] - replays} answered 202, "
            f"{replays} answered 200 (a replay after a cut-off answer), {outcomes[NO_ANSWER]} without "
            f"answer, {outcomes[ANSWERED]} answered otherwise {dict(answered) or ''}".rstrip(),
            f"  rows: {len(self.rows)} {dict(statuses)}; attempts per job {dict(sorted(tries.items()))}; "
            f"drained in {self.drain_seconds:.1f} s after the last upload",
            f"  rows without a 202 (answer cut off by a kill): {len(self.orphans)}; "
            f"lost: {sum(1 for p in self.problems if p.startswith('lost'))}",
        ]
        for kill in self.kills:
            lines.append(
                f"  kill {kill.epoch + 1} ({kill.what}): {len(kill.running)} job(s) running, "
                f"upload in flight: {in_flight(kill)}, "
                f"cut-off answers that made a job: {cut[kill.epoch]}, "
                f"ready again in {kill.restart_seconds:.1f} s, "
                f"its jobs running again after {kill.recovery_seconds:.1f} s"
            )
        lines += [f"  PROBLEM: {p}" for p in self.problems] or ["  no problems"]
        return "\n".join(lines)


def in_flight(kill: Kill) -> str:
    if kill.in_flight is None:
        return "no"
    return "yes, its row committed" if kill.committed else "yes"


def check(
    base_url: str,
    ledger: Ledger,
    *,
    backend: str,
    started: float,
    drain_timeout: float,
    upload_kills: set[int] | None = None,
    before: Iterable[str] = (),
    idempotent: bool = False,
) -> Report:
    """Wait until nothing is queued or running, read every row, and compare with the ledger.

    ``upload_kills``: the epochs whose kill could cut an upload off (the API's); a kill of a worker
    must not disturb uploads at all (every attempt of its epoch answered). ``before``: the ids of
    jobs made before the uploader started (a warm-up), left out. ``idempotent``: the uploader sent
    each file again until accepted, so no job may be one nobody knows of."""
    seconds = time.monotonic() - started
    unfinished = None
    try:
        drained = drain(base_url, timeout=drain_timeout)
    except ScenarioError as exc:
        drained, unfinished = drain_timeout, str(exc)
    with httpx.Client(timeout=30.0) as client:
        earlier = set(before)
        rows = {job["id"]: job for job in list_jobs(client, base_url) if job["id"] not in earlier}
    attempts = ledger.snapshot()
    report = Report(
        backend=backend,
        seconds=seconds,
        attempts=attempts,
        kills=list(ledger.kills),
        rows=rows,
        drain_seconds=drained,
    )
    problems = report.problems
    if unfinished:
        problems.append(unfinished)
    by_name = {a.name: a for a in attempts}
    names = Counter(job["file"]["name"] for job in rows.values())
    for name, count in names.items():
        if count > 1:
            problems.append(f"duplicate: {count} rows for the one upload {name}")

    for attempt in report.accepted:
        job = rows.get(attempt.job_id or "")
        if job is None:
            problems.append(f"lost: {attempt.name} was answered 202 as {attempt.job_id}, which is gone")
        elif job["status"] != "succeeded":
            problems.append(f"lost: {attempt.name} ({job['id']}) ended {job['status']}: {job['error']}")
        elif job["file"]["name"] != attempt.name:
            problems.append(f"mixed up: {attempt.job_id} holds {job['file']['name']}, not {attempt.name}")
        elif (
            job["file"]["sha256"]
            != hashlib.sha256(file_content(attempt.name, job["file"]["size"])).hexdigest()
        ):
            problems.append(f"corrupt: {attempt.name} ({job['id']}) has another content's hash")

    accepted_ids = {a.job_id for a in report.accepted}
    answers: dict[str, set[str | None]] = {}
    for attempt in report.accepted:
        answers.setdefault(attempt.name, set()).add(attempt.job_id)
    for name, ids in answers.items():
        if len(ids) > 1:
            problems.append(
                f"replay: {name} was answered with {len(ids)} different jobs {sorted(map(str, ids))}"
            )
    for job in rows.values():
        if job["id"] in accepted_ids:
            continue
        name = job["file"]["name"]
        made_by = by_name.get(name)
        if made_by is None:
            problems.append(f"stray: row {job['id']} ({name}) matches no upload of the ledger")
            continue
        if made_by.outcome != NO_ANSWER:
            problems.append(f"stray: row {job['id']} for {name}, which was answered {made_by.status_code}")
            continue
        report.orphans[name] = job
        if job["status"] != "succeeded":
            problems.append(f"cut off: {name} ({job['id']}) ended {job['status']}: {job['error']}")

    if idempotent and report.orphans:
        problems.append(f"orphans despite Idempotency-Key retries: {sorted(report.orphans)}")
    cut = report.cut_off()
    kills = {kill.epoch: kill for kill in report.kills}
    for epoch, count in cut.items():
        if epoch not in kills:
            problems.append(f"{count} upload(s) without answer made a job, with no kill to blame")
        elif count > 1:
            problems.append(f"kill {epoch + 1}: {count} cut-off uploads made a job (at most one may)")
        elif upload_kills is not None and epoch not in upload_kills:
            problems.append(f"kill {epoch + 1} ({kills[epoch].what}) cut an upload off")
    for attempt in attempts:
        if attempt.outcome == ANSWERED and attempt.status_code not in BACKPRESSURE:
            problems.append(f"{attempt.name} was answered {attempt.status_code}: {attempt.error}")
    if upload_kills is not None:
        for attempt in attempts:
            if attempt.outcome == NO_ANSWER and attempt.epoch not in upload_kills:
                what = kills[attempt.epoch].what if attempt.epoch in kills else "no kill"
                problems.append(
                    f"{attempt.name} was not accepted ({attempt.outcome}: {attempt.error}) ({what})"
                )
    return report


# ---- the scenarios ------------------------------------------------------------------------------


@dataclass
class Plan:
    """When to kill: after ``every`` further 202s each time, or spread over ``seconds``."""

    kills: int = 4
    every: int | None = 20
    seconds: float | None = None
    moment_timeout: float = 60.0
    drain_timeout: float = 60.0
    recovery_timeout: float = 40.0

    def wait(self, ledger: Ledger, index: int, started: float) -> None:
        """Block until the moment of kill ``index`` (0-based); ``index == kills``: the end."""
        if self.every is not None:
            ledger.wait_accepted(self.every * (index + 1), timeout=self.moment_timeout)
            return
        assert self.seconds is not None
        moment = started + self.seconds * (index + 1) / (self.kills + 1)
        wait_until(lambda: time.monotonic() >= moment, timeout=self.seconds + 1, what="the next moment")


def run_local(server: Server, plan: Plan, *, uploader: dict[str, Any] | None = None) -> Report:
    """``server`` (started, local backend) is killed ``plan.kills`` times while a job is running and
    restarted on the same data directory; the uploader follows it to its new port."""
    ledger = Ledger()
    up = Uploader(lambda: server.base_url, ledger, **(uploader or {}))
    started = time.monotonic()
    up.start()
    try:
        for index in range(plan.kills):
            plan.wait(ledger, index, started)
            running = wait_running(server.base_url)
            server.remember_children()  # its worker children, killed with it at cleanup
            rows = SqliteRows(server) if index % 2 == 0 else None
            try:
                kill = kill_during_upload(ledger, "server", running, sigkill(server.pid), row_exists=rows)
            finally:
                if rows is not None:
                    rows.close()
            server.kill9()
            server.start()
            ledger.restarted()
            kill.restart_seconds = time.monotonic() - kill.at
            kill.recovery_seconds = reclaimed(
                server.base_url, running, since=kill.at, timeout=plan.recovery_timeout
            )
        plan.wait(ledger, plan.kills, started)
    finally:
        up.stop()
    return check(
        server.base_url,
        ledger,
        backend="local, idempotent" if up.idempotent else "local",
        started=started,
        drain_timeout=plan.drain_timeout,
        idempotent=up.idempotent,
    )


def kill_during_upload(
    ledger: Ledger,
    what: str,
    running: list[tuple[str, int]],
    kill: Callable[[], None],
    *,
    row_exists: Callable[[str], bool] | None = None,
    budget: float = 10.0,
) -> Kill:
    """``kill()`` while an upload is on its way, and record it.

    With ``row_exists``: at the moment the upload's row is committed and its answer not received
    yet (the answer cut off: the job exists, the client never learns its id). That window is a few
    milliseconds, so each upload's row is looked for in a tight loop while it is on its way; after
    ``budget`` s without catching one, the kill happens at the next upload anyway."""
    deadline = time.monotonic() + budget
    while row_exists is not None and time.monotonic() < deadline:
        ledger.wait_in_flight(timeout=10)
        attempt = ledger.current()
        while attempt is not None and ledger.current() is attempt:
            if row_exists(attempt.name):
                record = ledger.killed(what, running)
                kill()
                record.committed = record.in_flight == attempt.number
                return record
    ledger.wait_in_flight(timeout=10)
    record = ledger.killed(what, running)
    kill()
    return record


class SqliteRows:
    """Is there a row for this file name? Read straight from a server's SQLite file (read-only)."""

    def __init__(self, server: Server) -> None:
        path = server.data_dir / "filejobs.db"
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, isolation_level=None)

    def __call__(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM jobs WHERE file_name = ?", (name,)).fetchone() is not None

    def close(self) -> None:
        self.conn.close()


class PostgresRows:
    """Is there a row for this file name in a cluster's PostgreSQL database?"""

    def __init__(self, cluster: Cluster) -> None:
        import psycopg

        url = cluster.database_url.replace("postgresql+psycopg://", "postgresql://")
        self.conn = psycopg.connect(url, autocommit=True)

    def __call__(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM jobs WHERE file_name = %s", (name,)).fetchone() is not None

    def close(self) -> None:
        self.conn.close()


def sigkill(pid: int) -> Callable[[], None]:
    """SIGKILL ``pid`` at once (the helpers' ``kill9`` then waits for it and tidies up)."""

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    return kill


def wait_running(base_url: str, timeout: float = 30.0) -> list[tuple[str, int]]:
    """``(job id, attempt)`` of the jobs running right now, once there is at least one."""
    with httpx.Client(timeout=10.0) as client:
        found: list[tuple[str, int]] = wait_until(
            lambda: running_jobs(client, base_url), timeout=timeout, what="a running job"
        )
    return found


def lease_pid(owner: str | None) -> int | None:
    """The process in a lease owner ``host:pid:random:n``."""
    parts = (owner or "").split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def run_celery(
    cluster: Cluster, plan: Plan, *, api_kill_at: int = 2, uploader: dict[str, Any] | None = None
) -> Report:
    """An API and two concurrency-1 workers of ``cluster``; ``plan.kills`` kills: the worker running
    a job (``kill9_tree``, a fresh worker started in its place) each time, except kill number
    ``api_kill_at`` (0-based), which kills the API server and restarts it."""
    from filejobs.jobs import repository
    from filejobs.models import JobStatus

    env = dict(FAST)
    workers = [cluster.worker(1, None, **env), cluster.worker(1, None, **env)]
    api = cluster.api(**env)
    cluster.workers_ready(*workers)
    with api.client() as client:
        cluster.warm_up(client, workers)
        warm = [job["id"] for job in list_jobs(client, api.base_url)]

    ledger = Ledger()
    up = Uploader(lambda: api.base_url, ledger, **(uploader or {}))
    started = time.monotonic()
    upload_kills: set[int] = set()

    def victim() -> tuple[Worker, str, int] | None:
        """A live worker running a job now, the job and its attempt."""
        jobs, _ = repository.list_jobs(cluster.db, status=JobStatus.running, limit=20)
        for job in jobs:
            pid = lease_pid(job.lease_owner)
            for worker in workers:
                if worker.returncode is None and pid in worker.job_pids():
                    return worker, job.id, job.attempts
        return None

    up.start()
    try:
        for index in range(plan.kills):
            plan.wait(ledger, index, started)
            if index == api_kill_at:
                running = wait_running(api.base_url)
                api.remember_children()
                rows = PostgresRows(cluster)
                try:
                    kill = kill_during_upload(ledger, "api", running, sigkill(api.pid), row_exists=rows)
                finally:
                    rows.close()
                upload_kills.add(kill.epoch)
                api.kill9()
                api.start()
                ledger.restarted()
                # The workers run on; what the API's death holds up is the uploads.
                kill.restart_seconds = kill.recovery_seconds = time.monotonic() - kill.at
                continue
            worker, job_id, attempt = wait_until(victim, timeout=30, what="a worker running a job")
            kill = ledger.killed(worker.name, [(job_id, attempt)])
            worker.kill9_tree()
            workers.remove(worker)
            fresh = cluster.worker(1, None, **env)
            fresh.wait_ready()
            workers.append(fresh)
            ledger.restarted()
            kill.restart_seconds = time.monotonic() - kill.at
            kill.recovery_seconds = reclaimed(
                api.base_url, kill.running, since=kill.at, timeout=plan.recovery_timeout
            )
        plan.wait(ledger, plan.kills, started)
    finally:
        up.stop()
    return check(
        api.base_url,
        ledger,
        backend="celery, idempotent" if up.idempotent else "celery",
        started=started,
        drain_timeout=plan.drain_timeout,
        upload_kills=upload_kills,
        before=warm,
        idempotent=up.idempotent,
    )
