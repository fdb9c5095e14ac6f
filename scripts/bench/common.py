"""What every figure of the suite shares: the servers under test, samplers, the streamed body, dd.

Three servers run under the same uvicorn (uvloop, httptools, log level warning, no access log):

* ``filejobs``: a real ``filejobs serve`` (:class:`filejobs.testing.Server`) with its own data dir;
* ``tutorial``: :mod:`scripts.bench.apps.tutorial`, FastAPI + UploadFile + aiofiles + a dict;
  ``tutorial-durable`` is the same app fsyncing each file and its directory before answering;
* ``raw``: :mod:`scripts.bench.apps.raw_asgi`, a bare ASGI app that only counts body bytes;
* ``durable``: :mod:`scripts.bench.apps.durable_sink`, the raw app that also hashes the body and
  writes it, fsynced, to a file (the floor of a durable content-addressed upload).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import psutil

from filejobs.testing import HttpProcess, Server

#: The checkout (the baseline apps run from it: ``python -m scripts.bench`` runs from its root).
REPO = Path(__file__).resolve().parents[2]

MiB = 1024 * 1024
MB = 1_000_000
SAMPLE_EVERY = 0.02
LOG_LEVEL = "warning"
AppName = Literal["filejobs", "tutorial", "tutorial-durable", "raw", "durable"]
BaselineName = Literal["tutorial", "tutorial-durable", "raw", "durable"]


@dataclass
class Context:
    """The run's settings, shared by every figure."""

    work: Path  # a directory on the disk under test; each figure makes its own sub-directories
    smoke: bool = False  # tiny sizes and short runs: proves the suite works, measures nothing
    rounds: int = 3  # alternating filejobs/baseline rounds per figure (medians are reported)
    log: IO[str] = field(default_factory=lambda: sys.stderr)

    def say(self, message: str) -> None:
        print(message, file=self.log, flush=True)

    def subdir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# ---- the servers ---------------------------------------------------------------------------------


#: ``filejobs serve --processes`` for every filejobs server of the run (``--processes`` of the suite).
API_PROCESSES = 1
#: ``FILEJOBS_WORKER_PROCESS`` for every filejobs server of the run (``--worker-process`` of the suite).
WORKER_PROCESS = False


def filejobs_server(
    data_dir: Path, env: Mapping[str, str] | None = None, *, scalable: bool = False
) -> Server:
    """``filejobs serve --log-level warning`` with ``env`` (e.g. ``FILEJOBS_WORKERS``); not started.
    ``scalable`` figures (throughput over HTTP only) run with the suite's ``--processes``; the
    others measure one process (its RSS, its CPU)."""
    processes = API_PROCESSES if scalable else 1
    return Server(
        data_dir,
        env={
            "FILEJOBS_API_PROCESSES": str(processes),
            "FILEJOBS_WORKER_PROCESS": str(WORKER_PROCESS).lower(),
            **(env or {}),
        },
        log_path=data_dir.parent / f"{data_dir.name}.log",
        args=["--log-level", LOG_LEVEL],
    )


class UvicornApp(HttpProcess):
    """A baseline app (``tutorial``, ``tutorial-durable``, ``raw`` or ``durable``) under uvicorn on
    a free port; a context manager. ``data_dir`` is where the tutorials and the durable sink store
    files."""

    MODULES = {
        "tutorial": "scripts.bench.apps.tutorial:app",
        "tutorial-durable": "scripts.bench.apps.tutorial:app",  # with TUTORIAL_DURABLE=1
        "raw": "scripts.bench.apps.raw_asgi:app",
        "durable": "scripts.bench.apps.durable_sink:app",
    }

    def __init__(self, name: BaselineName, data_dir: Path) -> None:
        durable = "1" if name == "tutorial-durable" else "0"
        super().__init__(
            cwd=REPO,  # the baseline apps are modules of this checkout's scripts package
            log_path=data_dir.parent / f"{data_dir.name}.log",
            env={"TUTORIAL_DATA_DIR": str(data_dir), "TUTORIAL_DURABLE": durable},
            name=name,
        )
        self.data_dir = data_dir

    def argv(self) -> list[str]:
        return [
            *(sys.executable, "-m", "uvicorn", self.MODULES[self.name]),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--log-level", LOG_LEVEL, "--no-access-log"),
        ]

    def spawn(self) -> UvicornApp:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return super().spawn()

    def healthy(self, status: int) -> bool:
        return status < 500  # the raw app answers 404 there: it is up


#: Where each app takes uploads and answers status.
UPLOAD_PATH: dict[AppName, str] = {
    "filejobs": "/v1/jobs",
    "tutorial": "/jobs",
    "tutorial-durable": "/jobs",
    "raw": "/upload",
    "durable": "/upload",
}
STATUS_PATH: dict[AppName, str] = {
    "filejobs": "/v1/jobs/{id}",
    "tutorial": "/jobs/{id}",
    "tutorial-durable": "/jobs/{id}",
    "raw": "/",
    "durable": "/",
}


# ---- samplers -------------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def rss(pid: int, *, children: bool = False) -> int:
    """RSS of ``pid`` (and, with ``children``, of its descendants) in bytes."""
    total = 0
    for proc in tree(pid) if children else [psutil.Process(pid)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def write_bytes(pid: int) -> int:
    """Bytes ``pid`` and its descendants caused to be written to storage (``/proc/<pid>/io``)."""
    total = 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.io_counters().write_bytes
    return total


class RssSampler:
    """Samples the RSS of one process every 20 ms in a thread; ``peak`` holds the highest seen."""

    def __init__(self, pid: int, *, children: bool = False) -> None:
        self.pid = pid
        self.children = children
        self.peak = 0
        self.before = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid, children=self.children))
            self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> RssSampler:
        self.before = self.peak = rss(self.pid, children=self.children)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid, children=self.children))


# ---- the streamed multipart body -------------------------------------------------------------------


class Body:
    """A multipart/form-data body: ``chunks`` copies of ``block`` in the field ``file``, streamed
    from a generator with a Content-Length (the client never holds it); records when the first and
    the last byte left."""

    def __init__(self, block: bytes, chunks: int, name: str = "bench.bin") -> None:
        self.boundary = f"filejobs-bench-{os.urandom(12).hex()}"
        self.block = block
        self.chunks = chunks
        self.preamble = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.epilogue = f"\r\n--{self.boundary}--\r\n".encode()
        self.first_byte: float | None = None
        self.last_byte: float | None = None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        return len(self.preamble) + len(self.block) * self.chunks + len(self.epilogue)

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Content-Length": str(self.length)}

    def __iter__(self) -> Iterator[bytes]:
        self.first_byte = time.perf_counter()
        yield self.preamble
        for _ in range(self.chunks):
            yield self.block
        yield self.epilogue
        # httpx asks for the next piece only once the previous one is written to the socket.
        self.last_byte = time.perf_counter()

    def whole(self) -> bytes:
        """The body in one piece (small bodies only: load generators send it as is)."""
        return self.preamble + self.block * self.chunks + self.epilogue


# ---- the disk -------------------------------------------------------------------------------------


def run_dd(directory: Path, size_mib: int) -> float:
    """MB/s of ``dd if=/dev/zero bs=1M count=N conv=fsync`` into ``directory`` (dd's own clock)."""
    target = directory / "dd.bin"
    command = ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={size_mib}", "conv=fsync"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    target.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"dd failed ({done.returncode}): {done.stderr.strip()}")
    reported = re.search(r"copied, ([\d.]+) s", done.stderr)
    if reported:  # dd's own clock excludes process start-up
        elapsed = float(reported.group(1))
    return size_mib * MiB / elapsed / MB


def filesystem_of(path: Path) -> str:
    best = None
    for part in psutil.disk_partitions(all=True):
        if str(path.resolve()).startswith(part.mountpoint) and (
            best is None or len(part.mountpoint) > len(best.mountpoint)
        ):
            best = part
    return f"{best.device} ({best.fstype}) on {best.mountpoint}" if best else "unknown"
