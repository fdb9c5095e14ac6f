"""Idempotency keys: the same file with the same options gives the same key, in every run.

A submit sends ``Idempotency-Key: idempotency_key(sha256, size, processor, params, name=...)``
unless the caller gives its own, so repeating an upload (a retry after a lost answer, or a batch run again
after an interruption) can be recognised by the server as the same request instead of a new job.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import IO, Any

KEY_VERSION = 1
_READ = 1024 * 1024


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's content (hex), read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return stream_sha256(f)[0]


def stream_sha256(stream: IO[bytes]) -> tuple[str, int]:
    """The SHA-256 (hex) and length of what is left to read in ``stream``."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(_READ):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def idempotency_key(
    sha256: str,
    size: int,
    processor: str | None,
    params: dict[str, Any] | None,
    *,
    name: str | None = None,
    reuse: bool = True,
    callback_url: str | None = None,
) -> str:
    """A stable key (64 hex digits) for submitting this content, under this name, with these options.

    Canonical JSON (sorted keys, no spaces, ASCII) of the inputs, hashed with SHA-256. ``params``
    of ``None`` counts as ``{}`` (the server treats them alike). ``name`` keeps two files with the
    same content apart (two photos that happen to be identical are still two jobs in a batch).
    """
    document: dict[str, Any] = {
        "v": KEY_VERSION,
        "sha256": sha256.lower(),
        "size": size,
        "processor": processor,
        "params": params or {},
    }
    if name is not None:  # absent rather than null, so keys made without a name never change
        document["name"] = name
    if not reuse:  # a fresh run asked for is another request (absent when true: keys stay as they were)
        document["reuse"] = False
    if callback_url is not None:  # the server counts it in the key's request when given
        document["callback_url"] = callback_url
    canonical = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
