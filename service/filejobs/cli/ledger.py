"""The batch ledger: what ``filejobs submit --ledger FILE`` knows about every file, on disk.

JSON lines, append-only. Every record is the whole state of one file after one event (``submit``:
about to upload, with the Idempotency-Key; ``upload``: a resumable upload was created, with its
URL, so a re-run resumes it from the server's offset; ``accepted``: the server answered 202 with a job id;
``rejected``, ``finished``, ``result``, ``error``, ``lost``), so reading keeps the last record per
path. Each record is written with one ``write`` on an ``O_APPEND`` descriptor and fsync'd before
the batch goes on: a ``kill -9`` loses at most the line being written, and a torn last line is
ignored on reading (and closed with a newline before appending). An exclusive ``flock`` keeps two
batches from writing one ledger at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class FileState:
    """One file of a batch: where it is, what it is, and what became of it."""

    path: str  # absolute: the ledger's key
    relpath: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    key: str | None = None  # the Idempotency-Key (sha256 + size + processor + params)
    job_id: str | None = None
    # pending, hashing, uploading, submitting (sent, no answer recorded), queued, running,
    # succeeded, failed, cancelled, rejected (a 4xx at submit), error (no answer: status unknown)
    status: str = "pending"
    error: dict[str, Any] | None = None
    result_path: str | None = None
    submitted_at: float | None = None  # when the upload began (unix time): bounds reconciliation
    upload_url: str | None = None  # a resumable (tus) upload begun for this file: a re-run resumes it

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def record(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS = {f.name for f in fields(FileState)}


class LedgerBusy(RuntimeError):
    pass


def load(path: Path) -> dict[str, FileState]:
    """The last state of every path in the ledger at ``path`` ({} when there is none yet)."""
    states: dict[str, FileState] = {}
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return states
    with handle:
        for line in handle:
            try:
                record = json.loads(line)
                state = FileState(**{k: v for k, v in record.items() if k in _FIELDS})
            except (ValueError, TypeError):
                continue  # the torn last line of a killed run (or a line someone edited)
            if isinstance(state.path, str):
                states[state.path] = state
    return states


class Ledger:
    """An open ledger: :meth:`append` is safe from several threads (``asyncio.to_thread``)."""

    def __init__(self, path: Path, context: dict[str, Any] | None = None) -> None:
        self.path = path
        self.context = dict(context or {})  # written into every record (processor, params)
        self._lock = threading.Lock()
        self._fd: int | None = None

    def open(self) -> Ledger:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0666 less the umask, as any tool's file (umask 077 keeps params such as a PDF password private)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LedgerBusy(f"{self.path} is in use by another filejobs submit") from None
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            self._write(fd, b"\n")  # end a torn line, so the next record starts on its own
        self._fd = fd
        return self

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)

    def line(self, event: str, state: FileState) -> bytes:
        """The record of ``state`` after ``event``, as one line (taken now, written later)."""
        record = {"event": event, "time": round(time.time(), 3), **self.context, **state.record()}
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def write(self, line: bytes) -> None:
        """Append and fsync one line (blocking: the batch calls it in a worker thread)."""
        with self._lock:
            if self._fd is not None:  # a write scheduled before close() but run after: dropped
                self._write(self._fd, line)

    def append(self, event: str, state: FileState) -> None:
        self.write(self.line(event, state))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Ledger:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
