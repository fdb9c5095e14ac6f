"""What filejobs reads from ``Upload-Metadata``, and its checks at creation.

Keys: ``filename`` (or ``name``, as Uppy sends), ``filetype`` (or ``type``), ``processor``, ``reuse``,
``params`` (a JSON object), ``callback_url`` and ``idempotency-key``. Other keys are kept and echoed but
not used (browser clients add their own, e.g. ``relativePath``).
"""

from __future__ import annotations

from collections.abc import Mapping

from filejobs.errors import UnsupportedMediaType
from filejobs.jobs import idempotency
from filejobs.jobs.submit import validate_fields
from filejobs.processors.registry import Registry

IDEMPOTENCY_KEY = "idempotency-key"
#: The keys that are the job's form fields (as in ``POST /v1/jobs``).
JOB_FIELDS = ("processor", "params", "reuse", "callback_url")
KEYS = ("filename", "filetype", "processor", "params", "reuse", "callback_url", IDEMPOTENCY_KEY)


def upload_name(metadata: Mapping[str, str]) -> str | None:
    return metadata.get("filename") or metadata.get("name") or None


def declared_type(metadata: Mapping[str, str]) -> str | None:
    value = metadata.get("filetype") or metadata.get("type") or ""
    return value.strip()[:255] or None


def job_fields(metadata: Mapping[str, str]) -> dict[str, str]:
    """The form fields ``POST /v1/jobs`` would have had."""
    return {name: metadata[name] for name in JOB_FIELDS if name in metadata}


def check_metadata(registry: Registry, metadata: Mapping[str, str]) -> None:
    """Refuse at creation, before a byte is sent, what the finished upload could not become: an
    unknown processor or invalid params (422), a declared ``filetype`` the processor does not take
    (415), a malformed idempotency key (400). The sniffed type is checked again once complete."""
    submission = validate_fields(registry, job_fields(metadata))
    if IDEMPOTENCY_KEY in metadata:
        idempotency.parse_key(metadata[IDEMPOTENCY_KEY])
    declared = declared_type(metadata)
    processor = submission.entry.processor
    if declared and "/" in declared and not processor.accepts_type(declared.split(";")[0].strip().lower()):
        raise UnsupportedMediaType(
            f"Processor {processor.name!r} does not accept {declared} files (accepts: "
            f"{', '.join(processor.accepts)}).",
            content_type=declared,
            accepts=list(processor.accepts),
        )
