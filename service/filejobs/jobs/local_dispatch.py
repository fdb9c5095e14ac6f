"""The local backend's dispatcher: job ids go to this process's worker pool (:mod:`filejobs.jobs.worker`)."""

from __future__ import annotations

from filejobs.jobs.worker import LocalWorker


class LocalDispatcher:
    """Hands ids to the in-process worker pool (none when ``FILEJOBS_WORKERS=0``)."""

    name = "local"
    check_name = "dispatcher"
    durable = False

    def __init__(self, worker: LocalWorker | None) -> None:
        self.worker = worker

    def submit(self, job_id: str) -> None:
        if self.worker is not None:
            self.worker.submit(job_id)

    def cancelled(self, job_id: str) -> None:
        if self.worker is not None:
            self.worker.hint_cancelled(job_id)

    def check(self) -> None:
        return None

    def pending_messages(self) -> int | None:
        return None
