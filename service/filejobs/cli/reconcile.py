"""Find the jobs of uploads whose answer was lost, so a resumed batch does not submit them twice.

A ledger ``submit`` record without a later job id means the upload began and then the batch was
killed, lost the connection, or got no answer: the server may or may not have made the job. Every
submit carries an Idempotency-Key (the same on a re-run), which a server that honours it uses to
answer with the first job. This does not rely on that: before submitting again, the jobs created
since the earliest such upload (newest first, for the batch's processor, :data:`MARGIN` s of clock
skew allowed) are matched on the file's SHA-256, size and name and on the params, and a match is
adopted as the file's job.
"""

from __future__ import annotations

from typing import Any

from filejobs.cli.ledger import FileState
from filejobs.client import AsyncClient, Job

MARGIN = 300.0
#: The most jobs looked at; a busy server's older jobs are not worth the time.
MAX_SCAN = 20_000
DEFAULT_PROCESSOR = "inspect"
_MASKED = "**********"


def dangling(previous: dict[str, FileState]) -> list[FileState]:
    """Uploads the ledger saw begin but not answered."""
    return [
        s
        for s in previous.values()
        if s.job_id is None and s.submitted_at is not None and s.sha256 and s.status != "rejected"
    ]


def same_params(asked: dict[str, Any] | None, job: Job) -> bool:
    """The job body has every param that was sent (plus defaults); secrets are shown masked."""
    return all(job.params.get(k) in (v, _MASKED) for k, v in (asked or {}).items())


async def reconcile(
    client: AsyncClient, previous: dict[str, FileState], processor: str | None, params: dict[str, Any] | None
) -> list[FileState]:
    """Give the dangling uploads of ``previous`` the jobs the server made for them; those adopted."""
    waiting = dangling(previous)
    if not waiting:
        return []
    since = min(s.submitted_at or 0.0 for s in waiting) - MARGIN
    by_content: dict[tuple[str, int], list[FileState]] = {}
    for state in waiting:
        by_content.setdefault((state.sha256 or "", state.size), []).append(state)
    claimed = {s.job_id for s in previous.values() if s.job_id}
    adopted: list[FileState] = []
    scanned = 0
    async for job in client.list(processor=processor or DEFAULT_PROCESSOR, page_size=200):
        scanned += 1
        if job.created_at.timestamp() < since or scanned > MAX_SCAN or not by_content:
            break
        candidates = by_content.get((job.file.sha256, job.file.size))
        if not candidates or job.id in claimed or not same_params(params, job):
            continue
        named = [s for s in candidates if s.relpath.rsplit("/", 1)[-1] == job.file.name]
        state = (named or candidates)[0]
        candidates.remove(state)
        if not candidates:
            del by_content[(job.file.sha256, job.file.size)]
        state.job_id, state.status, state.error = job.id, job.status, None
        claimed.add(job.id)
        adopted.append(state)
    return adopted
