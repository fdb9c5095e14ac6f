"""In-process cost of the 1 KiB upload's steps that issue 20 replaced: the way before and the way now.

``scripts.cpu_per_request`` measures a whole server; on a machine shared with other work its rounds
move by a fifth. This times each replaced step alone, on the ``cpu_per_request`` upload body, as the
minimum of ``--repeat`` runs of ``--number`` calls, the two ways alternating (the least
disturbed run of each):

    python -m scripts.upload_steps

The ways before are written out here as they were (python-multipart driving the receiver's
callbacks, the form validated twice, ``JobPublic`` then ``model_dump_json``, ``new_job`` asking
pydantic for every default, ``model_dump`` for the committer).
"""

from __future__ import annotations

import argparse
import asyncio
import timeit
from collections.abc import Callable
from typing import Any

from pydantic_core import PydanticUndefined
from python_multipart.multipart import MultipartParser

from filejobs.api.responses import job_json
from filejobs.jobs.group_commit import row_values
from filejobs.jobs.submit import KNOWN_FIELDS, validate_early_fields, validate_fields
from filejobs.models import Job, job_public, new_job, utcnow
from filejobs.processors.registry import build_registry
from filejobs.uploads import MAX_PART_HEADER_BYTES, MAX_PART_HEADERS, Limits, _Receiver

BOUNDARY = b"cpuPerRequestBoundary"
BODY = (
    b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="processor"\r\n\r\ninspect\r\n--' + BOUNDARY
    + b'\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\n'
    + b"x" * 1024 + b"\r\n--" + BOUNDARY + b"--\r\n"
)  # fmt: skip


def old_new_job(**values: Any) -> Job:
    defaults = {
        name: None if default is PydanticUndefined else default
        for name, info in Job.model_fields.items()
        if name not in values
        for default in [info.get_default(call_default_factory=True)]
    }
    return Job.model_construct(**defaults, **values)


async def steps() -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    registry = build_registry()
    limits = Limits(max_file_bytes=10**9, max_fields=8, max_field_bytes=64 * 1024)

    def receiver() -> _Receiver:
        return _Receiver(None, limits, lambda f: validate_early_fields(registry, f), KNOWN_FIELDS)  # type: ignore[arg-type]

    def python_multipart() -> _Receiver:
        parsed = receiver()
        parser = MultipartParser(
            BOUNDARY,
            parsed.callbacks(),  # type: ignore[arg-type]
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_PART_HEADER_BYTES,
        )
        parser.write(BODY)
        assert parsed.ended
        return parsed

    def whole() -> _Receiver:
        parsed = receiver()
        assert parsed.take_whole(BODY, BOUNDARY)
        return parsed

    fields = python_multipart().fields
    assert fields == whole().fields
    now = utcnow()
    values: dict[str, Any] = {
        "id": "01a24bd4-80f0-77ce-9e20-2c88aae7b39c", "owner": "", "status": "queued", "processor": "inspect",
        "params": {}, "secret_params": None, "file_name": "a.txt", "file_size": 1024, "file_sha256": "0" * 64,
        "file_content_type": "text/plain", "declared_content_type": "text/plain", "storage_key": "uploads/x",
        "max_attempts": 3, "callback_url": None, "created_at": now, "updated_at": now, "run_after": now,
        "processor_version": "1", "params_digest": "d",
    }  # fmt: skip
    job = new_job(**values)

    def validate_twice() -> None:
        validate_early_fields(registry, fields)
        validate_fields(registry, fields)

    return [
        ("multipart parse, receiver callbacks included", python_multipart, whole),
        (
            "form validation (twice, then once)",
            validate_twice,
            lambda: validate_early_fields(registry, fields),
        ),
        (
            "the 202's body (JobPublic, then job_json)",
            lambda: job_public(job).model_dump_json(),
            lambda: job_json(job),
        ),
        ("the new row (new_job)", lambda: old_new_job(**values), lambda: new_job(**values)),
        ("the committer's values (model_dump, then row_values)", job.model_dump, lambda: row_values(job)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=101)
    args = parser.parse_args()
    before = after = 0.0
    for name, old, new in asyncio.run(steps()):  # the receiver wants a running loop when made
        old_runs, new_runs = [], []
        for _ in range(args.repeat):  # alternating: a disturbance hits both ways alike
            old_runs.append(timeit.timeit(old, number=args.number))
            new_runs.append(timeit.timeit(new, number=args.number))
        old_us = min(old_runs) / args.number * 1e6
        new_us = min(new_runs) / args.number * 1e6
        before += old_us
        after += new_us
        print(f"{name:55s} {old_us:8.1f} us -> {new_us:7.1f} us")
    print(f"{'together':55s} {before:8.1f} us -> {after:7.1f} us per upload")


if __name__ == "__main__":
    main()
