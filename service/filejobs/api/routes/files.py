"""``GET`` (and ``HEAD``) ``/v1/files/{sha256}``: whether the caller has stored this content
(upload by hash). HEAD is the GET without its body (:mod:`filejobs.api.head`).

The answer is the caller's alone: one primary-key lookup of (key, SHA-256), so content another
key stored costs and answers what unknown content does (404).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel

from filejobs.api.auth import CallerDep, authenticate
from filejobs.api.deps import ServicesDep
from filejobs.api.problems import problem_docs
from filejobs.errors import NotFound, Unprocessable
from filejobs.jobs import files

router = APIRouter(prefix="/v1/files", tags=["files"], dependencies=[Depends(authenticate)])

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class StoredFileInfo(BaseModel):
    sha256: str
    size: int
    content_type: str


@router.get(
    "/{sha256}",
    response_model=StoredFileInfo,
    summary="Whether this key has stored a file with this SHA-256 (HEAD: the same, no body)",
    responses={
        200: {"description": "Stored: `POST /v1/jobs` with `file_sha256` and no file makes a job of it."},
        **problem_docs(401, 404, 422, 429),
    },
)
async def has_file(
    sha256: Annotated[str, Path(pattern=f"^{_SHA256.pattern}$", description="The file's SHA-256 (hex).")],
    services: ServicesDep,
    caller: CallerDep,
) -> Response:
    """200 with its size (also in ``X-File-Size``) or 404: this key has no such content."""
    if not _SHA256.fullmatch(sha256):
        raise Unprocessable("The SHA-256 must be 64 hexadecimal digits.")
    found = await to_thread.run_sync(
        partial(files.find_file, services.db, owner=caller.scope, sha256=sha256.lower())
    )
    if found is None:
        raise NotFound("This key has stored no file with this SHA-256.")
    info = StoredFileInfo(sha256=found.sha256, size=found.size, content_type=found.content_type)
    return Response(
        info.model_dump_json(), media_type="application/json", headers={"X-File-Size": str(found.size)}
    )
