"""The async client against a real ``filejobs serve`` process (one per module)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from filejobs.client import AsyncClient, Conflict, NotFound, Unprocessable, WaitTimeout, file_sha256
from filejobs.testing import Server

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SLEEPY = {"seconds": 60, "steps": 600}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_submit_wait_and_both_kinds_of_result(server: Server, text_file: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    async with AsyncClient(server.base_url, timeout=30) as client:
        job = await client.submit(text_file, on_progress=seen.append)
        assert seen == [text_file.stat().st_size]
        assert job.file.sha256 == file_sha256(text_file)
        done = await client.wait(job.id, timeout=30)
        assert done.status == "succeeded"
        result = await client.result(job.id)
        assert isinstance(result, dict)
        assert result["words"] == 4

        upper = await client.submit(text_file, processor="upper")
        assert (await client.wait(upper.id, timeout=30)).status == "succeeded"
        path = await client.result(upper.id, to=tmp_path)
        assert path == tmp_path / "hello.txt.upper.txt"
        assert path.read_bytes() == text_file.read_bytes().upper()
        buffer = io.BytesIO()
        assert await client.result(upper.id, to=buffer) is None
        assert buffer.getvalue() == text_file.read_bytes().upper()
        assert await client.get(upper.id) == await client.wait(upper.id)


async def test_large_upload_reports_progress_per_chunk(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    size = 2 * 1024 * 1024 + 1
    path.write_bytes(b"\0" * size)
    seen: list[int] = []
    async with AsyncClient(server.base_url) as client:
        job = await client.submit(path, on_progress=seen.append)
        assert job.file.size == size
        await client.delete(job.id)
    assert seen == [1024 * 1024, 2 * 1024 * 1024, size]


class Recording(httpx.AsyncHTTPTransport):
    """The real transport, remembering every request it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await super().handle_async_request(request)


async def test_list_iterates_every_page(server: Server, text_file: Path) -> None:
    transport = Recording()
    async with AsyncClient(server.base_url, transport=transport) as client:
        ids = [
            (await client.submit(text_file, processor="text-only", idempotency_key=f"page-{i}")).id
            for i in range(3)
        ]  # three jobs of one file: three keys (one key would name one job)
        listed = [job.id async for job in client.list(processor="text-only", page_size=1)]
    assert listed == ids[::-1]
    pages = [r for r in transport.requests if r.method == "GET" and r.url.path == "/v1/jobs"]
    assert len(pages) == 3
    assert [bool(r.url.params.get("cursor")) for r in pages] == [False, True, True]


async def test_cancel_retry_delete_and_errors(server: Server, text_file: Path) -> None:
    async with AsyncClient(server.base_url) as client:
        job = await client.submit(text_file, processor="sleep", params=SLEEPY)
        assert (await client.cancel(job.id)).status == "cancelled"
        with pytest.raises(Conflict):
            await client.cancel(job.id)
        assert (await client.retry(job.id)).status == "queued"
        with pytest.raises(WaitTimeout) as timeout:
            await client.wait(job.id, timeout=0.3)
        assert timeout.value.job is not None
        assert not timeout.value.job.terminal
        await client.delete(job.id)
        with pytest.raises(NotFound) as missing:
            await client.get(job.id)
        assert job.id in missing.value.detail

        with pytest.raises(Unprocessable) as invalid:
            await client.submit(text_file, processor="sleep", params={"steps": 0})
        assert [e["loc"] for e in invalid.value.errors] == [["steps"]]
        assert {"inspect", "upper"} <= {p.name for p in await client.processors()}
