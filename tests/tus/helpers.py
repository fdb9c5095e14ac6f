"""Speaking tus to a TestClient: headers, metadata, and the creation/PATCH/HEAD requests."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
from fastapi.testclient import TestClient

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}


def metadata(**values: str) -> str:
    """``Upload-Metadata`` for ``values`` (``idempotency_key`` stands for ``idempotency-key``)."""
    return ",".join(
        f"{key.replace('_', '-')} {base64.b64encode(value.encode()).decode()}"
        for key, value in values.items()
    )


def create(
    client: TestClient, length: int | None, *, headers: dict[str, str] | None = None, **meta: str
) -> httpx.Response:
    sent = {**TUS, **(headers or {})}
    if length is None:
        sent["Upload-Defer-Length"] = "1"
    else:
        sent["Upload-Length"] = str(length)
    if meta:
        sent["Upload-Metadata"] = metadata(**meta)
    return client.post("/v1/uploads", headers=sent)


def created(client: TestClient, length: int | None, **kwargs: Any) -> str:
    """Create an upload, insist on 201, return its URL."""
    response = create(client, length, **kwargs)
    assert response.status_code == 201, response.text
    location: str = response.headers["location"]
    assert location.startswith("/v1/uploads/")
    return location


def patch(
    client: TestClient, url: str, offset: int, data: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.patch(url, headers={**CHUNK, "Upload-Offset": str(offset), **(headers or {})}, content=data)


def head(client: TestClient, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.head(url, headers={**TUS, **(headers or {})})


def offset_of(client: TestClient, url: str, headers: dict[str, str] | None = None) -> int:
    response = head(client, url, headers)
    assert response.status_code == 200, response.status_code
    return int(response.headers["upload-offset"])


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def is_problem(response: httpx.Response, status: int) -> bool:
    """The answer is ``status`` with a problem+json body and tus's Tus-Resumable header."""
    return (
        response.status_code == status
        and response.headers.get("content-type") == "application/problem+json"
        and response.json()["status"] == status
        and response.headers.get("tus-resumable") == "1.0.0"
    )
