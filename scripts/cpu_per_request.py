"""Server CPU per request: this checkout against another revision, alternating, on one machine.

Throughput figures (``python -m scripts.bench``) need a quiet machine: another process on one of
two cores moves them by 30 %. The CPU time the server process itself spends per request moves far
less with the machine's load, so a before/after comparison of a change to a request path can be
made while other work runs. For each round, wrk drives each server for ``--seconds`` with 16
connections; the server process's own CPU time (user + system, all its threads; from
``/proc/<pid>/stat``) is divided by the requests wrk completed.

    python -m scripts.cpu_per_request --baseline 2f95d0e --what status --rounds 5
    python -m scripts.cpu_per_request --baseline main --what upload

``status`` polls one finished job (the fast path: ``GET /v1/jobs/{id}``); ``upload`` posts 1 KiB
multipart uploads (``FILEJOBS_WORKERS=0``: the jobs are not run, so the figure is the accept path
alone), the same content every time (after the first, each is a duplicate of stored content);
``first-upload`` posts 1 KiB uploads whose content differs in every request (first-time uploads).
``job`` runs them too: each round submits ``--jobs`` 1 KiB ``inspect`` jobs from the jobs
figure's 16 uploader threads (``scripts/bench/figures/jobs.py``) to a server with its default
local workers, waits until all of them succeeded, and divides the CPU of the server process and
its job children by the jobs; it also prints, as a hint only, the round's end-to-end jobs/s as a
ratio to its accept rate (the jobs figure's two rates).
``--env``/``--baseline-env NAME=VALUE`` set a variable for this checkout's or the baseline's server:
``--baseline HEAD --baseline-env FILEJOBS_REUSE=false`` compares reuse on and off on the same code.

The baseline revision is extracted into a temporary directory (``git archive``; either import
name: ``service`` before the rename, ``filejobs`` after). ``--baseline tutorial`` compares with the
benchmark's FastAPI tutorial app instead (``scripts/bench/apps/tutorial.py``, under uvicorn with the same
flags; ``upload``, ``first-upload`` and ``status`` only): it fsyncs nothing and keeps its jobs in a
dict, so the ratio is what filejobs' durability and features cost per request on this machine;
``--baseline tutorial-durable`` is the same app fsyncing each file and its directory before answering.
Needs ``wrk`` (Debian's package).

    python -m scripts.cpu_per_request --baseline tutorial --what upload
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from filejobs.testing.ports import free_port

REPO = Path(__file__).resolve().parent.parent
WRK_CONNECTIONS = 16
QUIET = ("--log-level", "warning")
TICKS = os.sysconf("SC_CLK_TCK")
UPLOAD_LUA = r"""
wrk.method = "POST"
local boundary = "cpuPerRequestBoundary"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
local before = "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"processor\"\r\n\r\n"
  .. "inspect\r\n--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"file\"; "
  .. "filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n"
local after = "\r\n--" .. boundary .. "--\r\n"
wrk.body = before .. string.rep("x", 1024) .. after
"""
#: ``first-upload``: the same request, but the file's first bytes differ in every one (a nonce new
#: for each wrk run, and a counter), so every upload is content the server has never seen (no
#: deduplication).
FIRST_UPLOAD_LUA = (
    UPLOAD_LUA
    + r"""
local counter = 0
local nonce = "%s"
function request()
  counter = counter + 1
  local tag = nonce .. "-" .. counter .. "-"
  return wrk.format(nil, nil, nil, before .. tag .. string.rep("x", 1024 - #tag) .. after)
end
"""
)


class Checkout:
    """A server of one checkout: its source root, its import name, its process."""

    def __init__(
        self, label: str, root: Path, work: Path, env: dict[str, str] | None = None, *, workers: bool = False
    ) -> None:
        self.label = label
        self.env = env or {}
        self.workers = workers
        self.root = root
        self.work = work
        source = root / "service"
        self.package = "filejobs" if (source / "filejobs").is_dir() else "service"
        self.pythonpath = f"{source}{os.pathsep}{root}" if self.package == "filejobs" else str(root)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FILEJOBS_")}
        env.update(
            PYTHONPATH=self.pythonpath,
            FILEJOBS_DATA_DIR=str(self.work / "data"),
            # Nothing finishes (no workers): without these, rounds past 10,000 uploads measured 429s.
            FILEJOBS_MAX_UNFINISHED_JOBS="0",
            FILEJOBS_MAX_QUEUE_DEPTH="0",
        )
        if not self.workers:
            env["FILEJOBS_WORKERS"] = "0"  # nothing runs beside the requests
        else:  # as the jobs figure runs it: every job runs (the same file each time: no reuse)
            env.update(FILEJOBS_REUSE="false", FILEJOBS_MIN_FREE_DISK="0")
        env.update(self.env)
        serve = [sys.executable, "-m", f"{self.package}.cli", "serve", "--port", str(self.port), *QUIET]
        self._spawn(serve, env)

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        """Start the server (output in ``server.log``, run from :attr:`root`) and wait until it answers."""
        log = open(self.work / "server.log", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label}: the server exited; see {self.work / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.label}: the server did not answer within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu_seconds(self, tree: bool = False) -> float:
        """The server process's CPU time (and its children's: ``tree``)."""
        assert self.proc is not None
        if tree:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = proc.cpu_times()
                    total += times.user + times.system
            return total
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime

    def target(self, what: str) -> str:
        if what in ("upload", "first-upload"):
            return f"{self.base_url}/v1/jobs"
        answer = httpx.post(
            f"{self.base_url}/v1/jobs",
            files={"file": ("a.txt", b"hello\n", "text/plain")},
            data={"processor": "inspect"},
            timeout=30,
        )
        answer.raise_for_status()
        return f"{self.base_url}/v1/jobs/{answer.json()['id']}"


class Tutorial(Checkout):
    """The benchmark's tutorial app (this checkout's ``scripts.bench.apps.tutorial``) as a baseline."""

    def __init__(self, work: Path, *, durable: bool = False) -> None:
        super().__init__("tutorial-durable" if durable else "tutorial", REPO, work)
        self.durable = durable

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FILEJOBS_")}
        env.update(
            PYTHONPATH=str(REPO),
            TUTORIAL_DATA_DIR=str(self.work / "data"),
            TUTORIAL_DURABLE="1" if self.durable else "0",
        )
        self._spawn(
            [
                *(sys.executable, "-m", "uvicorn", "scripts.bench.apps.tutorial:app"),
                *("--host", "127.0.0.1", "--port", str(self.port), "--no-access-log", *QUIET),
            ],
            env,
        )

    def target(self, what: str) -> str:
        if what in ("upload", "first-upload"):
            return f"{self.base_url}/jobs"
        answer = httpx.post(
            f"{self.base_url}/jobs", files={"file": ("a.txt", b"hello\n", "text/plain")}, timeout=30
        )
        answer.raise_for_status()
        return f"{self.base_url}/jobs/{answer.json()['id']}"


def wrk(url: str, seconds: float, script: Path | None) -> int:
    """Requests completed by wrk in ``seconds`` on ``WRK_CONNECTIONS`` connections."""
    args = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds:g}s", url]
    if script is not None:
        args[1:1] = ["-s", str(script)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+) requests in", out)
    if not match:
        raise RuntimeError(f"wrk printed no request count: {out}")
    if "Non-2xx" in out:  # a refusal's CPU is not a request's: the figure would be wrong
        raise RuntimeError(f"wrk saw answers other than 2xx/3xx: {out}")
    return int(match.group(1))


def cpu_per_request(server: Checkout, url: str, seconds: float, script: Path | None) -> tuple[float, float]:
    """Microseconds of the server's CPU per request over one wrk run, and requests per second
    (the latter only a hint on a loaded machine)."""
    before = server.cpu_seconds()
    requests = wrk(url, seconds, script)
    return (server.cpu_seconds() - before) / requests * 1e6, requests / seconds


def cpu_per_job(server: Checkout, jobs: int) -> tuple[float, float]:
    """Microseconds of the server's and its job children's CPU per job (accepted and run), and the
    round's end-to-end jobs/s as a ratio to its accept rate (a hint only on a loaded machine)."""
    from scripts.bench.figures.jobs import one_round

    before = server.cpu_seconds(tree=True)
    run = one_round(server.base_url, jobs)
    return (server.cpu_seconds(tree=True) - before) / jobs * 1e6, run.jobs_per_s / run.accept_per_s


@contextlib.contextmanager
def checkout(revision: str, where: Path) -> Iterator[Path]:
    """The files of ``revision`` in ``where`` (``git archive``: no worktree is registered in the
    repository, which other checkouts of it may share)."""
    where.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True, capture_output=True)
    yield where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline",
        required=True,
        help="a git revision to compare with, or 'tutorial' (the bench's tutorial app) or "
        "'tutorial-durable' (the same, fsyncing each file and its directory)",
    )
    parser.add_argument("--what", choices=["status", "upload", "first-upload", "job"], default="status")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per round (--what job)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--baseline-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None and args.what != "job":
        raise SystemExit("cpu_per_request needs wrk (apt-get install wrk)")
    tutorial = args.baseline in ("tutorial", "tutorial-durable")
    if tutorial and args.what == "job":
        raise SystemExit("the tutorial baseline runs no jobs: --what upload, first-upload or status")
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="fj-cpu-"))
        servers: list[Checkout] = []
        if tutorial:
            (Path(tmp) / "run-tutorial").mkdir()
            servers.append(Tutorial(Path(tmp) / "run-tutorial", durable=args.baseline == "tutorial-durable"))
        else:
            base_root = stack.enter_context(checkout(args.baseline, Path(tmp) / "checkout"))
            work = Path(tmp) / "run-baseline"
            work.mkdir()
            servers.append(
                Checkout("baseline", base_root, work, _env(args.baseline_env), workers=args.what == "job")
            )
        work = Path(tmp) / "run-this-checkout"
        work.mkdir()
        servers.append(Checkout("this checkout", REPO, work, _env(args.env), workers=args.what == "job"))
        script = None
        if args.what == "upload":
            script = Path(tmp) / "upload.lua"
            script.write_text(UPLOAD_LUA)
        elif args.what == "first-upload":
            script = Path(tmp) / "first-upload.lua"
            script.write_text(FIRST_UPLOAD_LUA % os.urandom(8).hex())
        try:
            for server in servers:
                server.start()
            urls = [server.target(args.what) for server in servers] if args.what != "job" else []
            if args.what == "job":  # warm up: worker children, imports, caches
                for server in servers:
                    cpu_per_job(server, 50)
            results: list[list[float]] = [[], []]
            rates: list[list[float]] = [[], []]
            for round_no in range(1, args.rounds + 1):
                for index, server in enumerate(servers):
                    if args.what == "job":
                        cpu, rate = cpu_per_job(server, args.jobs)
                    else:
                        if args.what == "first-upload" and script is not None:
                            # A new nonce for every wrk run: its counter starts again at 1, and the
                            # same bodies again would be content stored by an earlier round.
                            script.write_text(FIRST_UPLOAD_LUA % os.urandom(8).hex())
                        cpu, rate = cpu_per_request(server, urls[index], args.seconds, script)
                    results[index].append(cpu)
                    rates[index].append(rate)
                base_rate, rate = _rate(args.what, rates[0][-1]), _rate(args.what, rates[1][-1])
                print(
                    f"round {round_no}: baseline {results[0][-1]:7.1f} us ({base_rate}), "
                    f"this checkout {results[1][-1]:7.1f} us ({rate}) per {args.what}"
                )
        finally:
            for server in servers:
                server.stop()
    base, mine = statistics.median(results[0]), statistics.median(results[1])
    print(
        f"server CPU per {args.what} (median of {args.rounds}): baseline {args.baseline} {base:.1f} us, "
        f"this checkout {mine:.1f} us, ratio {mine / base:.3f}; "
        f"{'jobs/s to accept rate' if args.what == 'job' else 'requests/s'} "
        f"{_rate(args.what, statistics.median(rates[0]))} vs {_rate(args.what, statistics.median(rates[1]))}"
    )


def _rate(what: str, value: float) -> str:
    return f"{value:.2f}x accept" if what == "job" else f"{value:.0f}/s"


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env and --baseline-env take NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


if __name__ == "__main__":
    main()
