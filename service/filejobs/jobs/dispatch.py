"""Dispatchers hand job ids to whatever runs them. The row, not the dispatcher, is the truth:
a lost or duplicate dispatch is harmless because the sweeper re-dispatches and claims are
conditional."""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    name: str
    #: The key of this dispatcher's entry in /readyz.
    check_name: str
    #: True when published ids outlive this process (a broker); False for an in-process queue,
    #: which the sweeper refills with every due job.
    durable: bool

    def submit(self, job_id: str) -> None:
        """Ask for ``job_id`` to be run (after its row has committed); never blocks (it is called
        on the event loop): what takes time, a broker publish, is done by a thread of its own."""

    def cancelled(self, job_id: str) -> None:
        """A hint that ``job_id`` was cancelled or deleted, so a running worker stops sooner."""

    def check(self) -> None:
        """Raise when the dispatcher cannot take work (for /readyz)."""

    def pending_messages(self) -> int | None:
        """How many messages wait in the broker's queue; None when unknown or not a broker."""


class InMemoryDispatcher:
    """Records what it is given; for tests that run workers in burst mode themselves."""

    name = "memory"
    check_name = "dispatcher"
    durable = False

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled_ids: list[str] = []
        self.ready = True

    def submit(self, job_id: str) -> None:
        self.submitted.append(job_id)

    def cancelled(self, job_id: str) -> None:
        self.cancelled_ids.append(job_id)

    def check(self) -> None:
        if not self.ready:
            raise ConnectionError("dispatcher not ready")

    def pending_messages(self) -> int | None:
        return None
