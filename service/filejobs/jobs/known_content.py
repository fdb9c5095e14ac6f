"""Which owners' content this process has seen committed: a hint that lets an upload skip its bytes.

A small upload arrives whole and is held in memory until the group committer writes it
(:class:`filejobs.storage.LocalUploadSink`). When its owner already has that content, writing it
(create, write, fsync, rename, the directory's fsync) only for :func:`filejobs.jobs.files.link`
to find it redundant and delete it again costs two fsyncs and a thread call for nothing. When this
set says the owner has the content, the upload is recorded as an upload by hash instead: the
link, in the row's transaction, takes the stored content (locking its ``files`` row) or, if it was
deleted meanwhile, raises :class:`~filejobs.jobs.files.NotStored`, and the upload is then recorded
again with its bytes written, as any other. So the set is only a hint; it may be stale, never
wrong in what is committed.

Bounded: the oldest entries go first past :data:`MAX_ENTRIES`. Thread-safe (a lock around each
change: the intake runs on an event loop, but nothing here may fail a committed upload's answer).
"""

from __future__ import annotations

import threading

#: (owner, SHA-256) pairs remembered: about 200 bytes each.
MAX_ENTRIES = 16384


class KnownContent:
    """(owner, SHA-256) of content committed lately, oldest first."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._seen: dict[tuple[str, str], None] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def add(self, owner: str, sha256: str) -> None:
        """``owner`` has content ``sha256`` stored (its row committed)."""
        key = (owner, sha256)
        if key in self._seen:
            return
        with self._lock:
            self._seen[key] = None
            if len(self._seen) > self.max_entries:
                del self._seen[next(iter(self._seen))]

    def forget(self, owner: str, sha256: str) -> None:
        """The content turned out to be gone (deleted with its last job)."""
        with self._lock:
            self._seen.pop((owner, sha256), None)
