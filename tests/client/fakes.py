"""Scripted answers for httpx's own test seam, :class:`httpx.MockTransport`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response] | Exception


def job_body(
    job_id: str = "01a20903-0000-7000-8000-000000000001", status: str = "queued", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job_id,
        "status": status,
        "processor": "inspect",
        "params": {},
        "file": {"name": "hello.txt", "size": 12, "sha256": "0" * 64, "content_type": "text/plain"},
        "progress": 0.0,
        "message": None,
        "attempts": 0,
        "error": None,
        "result": None,
        "created_at": "2026-11-23T15:25:29.020094Z",
        "started_at": None,
        "finished_at": None,
        "updated_at": "2026-11-23T15:25:29.020094Z",
        "version": 1,
        "links": {"self": f"/v1/jobs/{job_id}", "result": f"/v1/jobs/{job_id}/result"},
    }
    body.update(extra)
    return body


def accepted(**extra: Any) -> httpx.Response:
    return httpx.Response(202, json=job_body(**extra), headers={"Retry-After": "1"})


def problem(status: int, detail: str = "nope", **headers: str) -> httpx.Response:
    body = {"type": "about:blank", "title": "Title", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json", **headers})


class Script:
    """Answers requests in order from ``answers`` (the last one repeats), reading each request's
    body first, and records what was sent: ``requests`` and ``bodies``."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def _next(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):  # a fresh copy: a response is used once
            return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)
        return answer(request)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.read())
        return self._next(request)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(await request.aread())
        return self._next(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def async_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.ahandle)
