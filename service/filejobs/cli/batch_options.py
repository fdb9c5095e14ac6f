"""The settings and signals of a batch, shared by :mod:`filejobs.cli.batch` and the ``submit`` command."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: One long-poll turn per job: a waiter moves on to the next job after this many seconds.
WAIT_SLICE = 15.0
#: After Ctrl-C, how long uploads already on their way get to receive their answer (202 or not).
GRACE = 10.0
#: Submit answers that would be the same for every file of the batch: stop instead of repeating them.
FATAL_STATUSES = frozenset({401, 403, 404, 405})
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Options:
    processor: str | None = None
    params: dict[str, Any] | None = None
    wait: bool = False
    concurrency: int = 4
    results: Path | None = None
    retry_failed: bool = False
    #: tus for big files: auto (files of at least resumable_threshold bytes), always, never.
    resumable: Literal["auto", "always", "never"] = "auto"
    resumable_threshold: int = 64 * 1024 * 1024
    chunk_size: int = 64 * 1024 * 1024
    #: False: ask the server for fresh runs (no reuse of kept results of the same file and options).
    reuse: bool = True
    #: Each job's final status is sent there (signed with the key's default secret).
    callback_url: str | None = None
    #: Uploads by hash many per request (``POST /v1/jobs/by-hash``); False: one request per file.
    batch_hashes: bool = True


class Fatal(Exception):
    """Stop the whole batch: the server refuses something every file shares (params, API key)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def waiters(concurrency: int) -> int:
    return max(4, min(2 * concurrency, 32))


def hash_file(path: str, stop: threading.Event) -> str:
    """SHA-256 of a file, in a worker thread; gives up quickly once ``stop`` is set (Ctrl-C)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            if stop.is_set():
                raise InterruptedError("the batch stopped")
            digest.update(chunk)
    return digest.hexdigest()


def error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


class Interrupted(Exception):
    """The batch stopped on Ctrl-C: nothing new was started, uploads in flight got their answer."""
