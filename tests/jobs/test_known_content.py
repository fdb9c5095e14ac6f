"""The intake's memory of stored content (``jobs/known_content.py``): bounded, oldest out first."""

from __future__ import annotations

from filejobs.jobs.known_content import KnownContent


def test_known_content_is_bounded_and_forgets_the_oldest_first() -> None:
    known = KnownContent(max_entries=3)
    for sha in ("a", "b", "c"):
        known.add("alice", sha)
    known.add("alice", "a")  # already there: nothing moves
    known.add("alice", "d")
    assert len(known) == 3
    assert ("alice", "a") not in known
    assert all(("alice", sha) in known for sha in ("b", "c", "d"))
    assert ("bob", "b") not in known  # per owner


def test_forgotten_content_is_no_longer_known() -> None:
    known = KnownContent()
    known.add("alice", "a")
    known.forget("alice", "a")
    known.forget("alice", "never added")
    assert ("alice", "a") not in known
    assert len(known) == 0
