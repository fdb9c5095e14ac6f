"""A completed upload becomes its job, exactly once, through the intake ``POST /v1/jobs`` uses.

The job's id is chosen and recorded in the upload's state before the job is made (on S3, when
its multipart upload starts: the object is named for it). The upload is sealed (S3: the
multipart upload completed into ``uploads/<job id>``; nothing to do locally), its sink stores it
under that id (a hard link locally, the upload keeping its own name for it until the row exists;
on S3 the object is in place already), then :func:`filejobs.jobs.intake.submit_received`
validates, sniffs the type again, applies the Idempotency-Key and inserts the row as for any
upload. Only then is the upload marked
done and its bytes dropped. A crash anywhere in between is repaired by the next request that
completes the upload: the row with the recorded id exists (done) or does not (made now); a link
left without a row is an orphan the sweeper removes, and made again here.
"""

from __future__ import annotations

import time

from anyio import to_thread

from filejobs import metrics
from filejobs.errors import Gone, Problem
from filejobs.filenames import display_name
from filejobs.ids import new_job_id
from filejobs.jobs.intake import IntakeServices, Submitted, submit_received
from filejobs.sniff import SNIFF_BYTES, sniff, sniff_is_cheap
from filejobs.tus.metadata import IDEMPOTENCY_KEY, declared_type, job_fields, upload_name
from filejobs.tus.receive import Hashes
from filejobs.tus.store import OpenUpload
from filejobs.uploads import ReceivedFile

#: Answers that no later try can change: the upload is removed with them.
FINAL = {413, 415, 422}


async def complete_upload(
    *,
    services: IntakeServices,
    upload: OpenUpload,
    hashes: Hashes,
    expiry: float,
) -> Submitted:
    """Make (or find) the job of the complete, locked ``upload``; mark it done, its record kept
    ``expiry`` seconds. A final refusal (415, 422) removes the upload; others leave it to retry."""
    info = upload.info
    assert info.length is not None
    assert info.offset == info.length
    if info.job_id is None:
        info.job_id = new_job_id()
        await to_thread.run_sync(upload.save)
    job = await services.reader.aget(info.job_id, owner=info.owner)
    if job is not None:  # made by an earlier try that died before marking the upload done
        await to_thread.run_sync(upload.finish, time.time() + expiry)
        return Submitted(job, replayed=True)
    try:
        await to_thread.run_sync(upload.seal)
    except Gone:
        await to_thread.run_sync(upload.remove)
        raise
    hasher = hashes.take(info.id, info.offset)
    sha256 = hasher.hexdigest() if hasher is not None else await to_thread.run_sync(upload.hash_all)
    sample = await to_thread.run_sync(upload.read, 0, min(SNIFF_BYTES, info.length))
    content_type = sniff(sample) if sniff_is_cheap(sample) else await to_thread.run_sync(sniff, sample)
    received = ReceivedFile(
        sink=upload.sink(),
        name=display_name(upload_name(info.metadata)),
        size=info.length,
        sha256=sha256,
        content_type=content_type,
        declared_content_type=declared_type(info.metadata),
        fields=job_fields(info.metadata),
    )
    try:
        submitted = await submit_received(
            services=services,
            owner=info.owner,
            received=received,
            job_id=info.job_id,
            idempotency_key=info.metadata.get(IDEMPOTENCY_KEY),
        )
    except Problem as problem:
        if problem.status in FINAL:
            await to_thread.run_sync(upload.remove)
            metrics.RESUMABLE_UPLOADS.labels("refused").inc()
        raise
    info.job_id = submitted.job.id  # a replayed Idempotency-Key: the earlier job
    await to_thread.run_sync(upload.finish, time.time() + expiry)
    metrics.RESUMABLE_UPLOADS.labels("completed").inc()
    return submitted
