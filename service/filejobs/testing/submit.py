"""POST a file to ``/v1/jobs`` as a browser or curl would: :func:`post_file` returns the answer,
:func:`submit` insists on ``202 Accepted`` and returns the job.

Both take any httpx-style client: a Starlette ``TestClient`` on an app in this process, or an
``httpx.Client`` on a real server (``Server.client()``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar


class Answer(Protocol):
    """What the helpers read of a response (``httpx.Response`` and its twins)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    def json(self, **kwargs: Any) -> Any: ...


R = TypeVar("R", bound=Answer, covariant=True)


class Poster(Protocol[R]):
    """A client that can POST a multipart form (``httpx.Client``, Starlette's ``TestClient``)."""

    def post(self, url: str, *, data: Any = ..., files: Any = ..., headers: Any = ...) -> R: ...


def bearer(secret: str | None) -> dict[str, str]:
    """The ``Authorization`` header of an API key (none for ``None``)."""
    return {"Authorization": f"Bearer {secret}"} if secret is not None else {}


def post_file(
    client: Poster[R],
    content: bytes = b"hello world\n",
    *,
    name: str = "hello.txt",
    processor: str | None = None,
    params: Mapping[str, Any] | str | None = None,
    content_type: str = "text/plain",
    key: str | None = None,
    idempotency_key: str | bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> R:
    """POST /v1/jobs with ``content`` as the ``file`` part, the ``processor`` and ``params`` (a
    mapping is sent as JSON, a string as it is) form fields when given, an API key (``key``) and an
    ``Idempotency-Key``; the answer, whatever it is."""
    form: dict[str, str] = {}
    if processor is not None:
        form["processor"] = processor
    if params is not None:
        form["params"] = params if isinstance(params, str) else json.dumps(params)
    sent: dict[str, Any] = {**bearer(key), **(headers or {})}
    if idempotency_key is not None:
        sent["Idempotency-Key"] = idempotency_key
    return client.post("/v1/jobs", files={"file": (name, content, content_type)}, data=form, headers=sent)


def submit(client: Poster[Answer], content: bytes = b"hello world\n", **kwargs: Any) -> dict[str, Any]:
    """:func:`post_file`, insisting on ``202 Accepted`` with the job's ``Location``; the job's body
    (``submit(client)["id"]`` is its id)."""
    response = post_file(client, content, **kwargs)
    assert response.status_code == 202, f"{response.status_code}: {response.text}"
    job: dict[str, Any] = response.json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}", response.headers
    return job
