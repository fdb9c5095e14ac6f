"""Hundreds of open streams on one API process: each one is a coroutine, not a thread, and every
one of them gets the change."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psutil

from filejobs.testing import Server
from tests.events.sse import Event, LineParser

STREAMS = 300


async def follow_all(base_url: str, job_ids: asyncio.Future[str], opened: asyncio.Queue[None]) -> list[Event]:
    async with httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0),
    ) as client:

        async def one() -> Event:
            async with client.stream("GET", "/v1/events") as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                assert await anext(lines) == "retry: 2000"  # the server has subscribed it
                await opened.put(None)
                job_id = await job_ids
                parser = LineParser()
                async for line in lines:
                    item = parser.feed(line)
                    if isinstance(item, Event) and item.event == "job" and item.json()["id"] == job_id:
                        return item
                raise AssertionError("the stream ended early")

        return await asyncio.gather(*(one() for _ in range(STREAMS)))


def test_hundreds_of_streams_get_every_change_without_a_thread_each(tmp_path: Path) -> None:
    with Server(tmp_path / "data", env={"FILEJOBS_WORKERS": "0"}, log_path=tmp_path / "server.log") as server:
        process = psutil.Process(server.pid)
        threads_before = process.num_threads()

        async def scenario() -> tuple[list[Event], int]:
            loop = asyncio.get_running_loop()
            job_id: asyncio.Future[str] = loop.create_future()
            opened: asyncio.Queue[None] = asyncio.Queue()
            followers = asyncio.ensure_future(follow_all(server.base_url, job_id, opened))
            for _ in range(STREAMS):
                await asyncio.wait_for(opened.get(), 30)
            threads_open = process.num_threads()
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                response = await client.post("/v1/jobs", files={"file": ("a.txt", b"hi\n", "text/plain")})
                assert response.status_code == 202, response.text
            job_id.set_result(response.json()["id"])
            return await asyncio.wait_for(followers, 60), threads_open

        events, threads_open = asyncio.run(scenario())
    assert len(events) == STREAMS
    assert {event.json()["status"] for event in events} == {"queued"}
    # A thread per stream would add 300. The event loop holds them all; what threads appear are
    # anyio's pool (at most 40), which the requests' short lookups may fill when they come at once.
    assert threads_open - threads_before <= 45, (threads_before, threads_open)
