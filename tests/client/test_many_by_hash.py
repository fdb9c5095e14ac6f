"""``submit_many_by_hash`` (``POST /v1/jobs/by-hash``) of both clients against a real server, and
the CLI's :class:`~filejobs.cli.by_hash.HashBatcher` that gathers a batch's files into it."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from filejobs.cli.by_hash import FALLBACK, MAX_ITEMS, HashBatcher
from filejobs.client import AsyncClient, ByHash, Client, Job, NotFound, ProblemError
from filejobs.client import _common as api
from filejobs.testing import Server
from tests.client.conftest import running_server

STORED = b"stored once\n"
STORED_SHA = hashlib.sha256(STORED).hexdigest()
UNKNOWN_SHA = hashlib.sha256(b"never sent\n").hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_server(tmp_path_factory.mktemp("server"), reuse="true")


def test_the_sync_client_makes_jobs_of_stored_content_and_asks_for_the_rest(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(STORED)
    with Client(server.base_url) as client:
        first = client.submit(path, processor="upper")
        client.wait(first.id, timeout=30)
        answers = client.submit_many_by_hash(
            [
                ByHash(STORED_SHA, len(STORED), "again.txt", processor="upper", idempotency_key="many-1"),
                ByHash(UNKNOWN_SHA, 11, "new.txt"),
                ByHash(STORED_SHA, len(STORED), "fresh.txt", processor="upper", reuse=False),
            ]
        )
        again, unknown, fresh = answers
        assert isinstance(again, Job)
        assert again.reused_from == first.id
        assert again.status == "succeeded"
        assert isinstance(unknown, ProblemError)
        assert unknown.status == 428
        assert unknown.body["send_file"] is True
        assert isinstance(fresh, Job)
        assert fresh.reused_from is None
        assert fresh.file.name == "fresh.txt"
        # the same item with its key again: the same job
        (replayed,) = client.submit_many_by_hash(
            [ByHash(STORED_SHA, len(STORED), "again.txt", processor="upper", idempotency_key="many-1")]
        )
        assert isinstance(replayed, Job)
        assert replayed.id == again.id


def test_the_async_client_splits_past_100_items(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_bytes(STORED)

    async def main() -> list[Job | ProblemError]:
        async with AsyncClient(server.base_url) as client:
            await client.submit(path)
            items = [ByHash(STORED_SHA, len(STORED), f"copy-{i}.txt") for i in range(MAX_ITEMS + 5)]
            return await client.submit_many_by_hash(items)

    answers = asyncio.run(main())
    assert len(answers) == MAX_ITEMS + 5
    assert all(isinstance(answer, Job) for answer in answers)
    names = [answer.file.name for answer in answers if isinstance(answer, Job)]
    assert names == [f"copy-{i}.txt" for i in range(MAX_ITEMS + 5)]


def test_requests_are_split_by_count_and_size_and_retried_only_with_keys() -> None:
    small = [ByHash(STORED_SHA, 1, f"{i}.txt", idempotency_key=f"k{i}") for i in range(250)]
    batches = api.by_hash_batches(small)
    assert [count for _, _, count in batches] == [100, 100, 50]
    assert all(call.safe for call, _, _ in batches)
    big = [ByHash(STORED_SHA, 1, "x", params={"pad": "p" * 300_000}) for _ in range(5)]
    batches = api.by_hash_batches(big)
    assert [count for _, _, count in batches] == [3, 2]
    assert all(len(body) <= api.BY_HASH_BODY for _, body, _ in batches)
    assert not any(call.safe for call, _, _ in batches)  # no keys: a lost answer is not sent again


class FakeClient:
    """Answers each batch with a job for stored content and a 428 otherwise; counts the requests."""

    def __init__(self, fail_with: ProblemError | None = None) -> None:
        self.batches: list[int] = []
        self.fail_with = fail_with
        self.release = asyncio.Event()

    async def submit_many_by_hash(self, files: Sequence[ByHash]) -> list[Job | ProblemError]:
        self.batches.append(len(files))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [
            _job(item) if item.sha256 == STORED_SHA else ProblemError(428, "Precondition Required", "send")
            for item in files
        ]


def _job(item: ByHash) -> Job:
    return Job.model_validate(
        {
            "id": f"job-{item.filename}",
            "status": "succeeded",
            "processor": "inspect",
            "params": {},
            "file": {
                "name": item.filename,
                "size": item.size,
                "sha256": item.sha256,
                "content_type": "text/plain",
            },
            "progress": 1.0,
            "attempts": 0,
            "created_at": "2026-12-06T00:00:00Z",
            "links": {
                "self": f"/v1/jobs/job-{item.filename}",
                "result": f"/v1/jobs/job-{item.filename}/result",
            },
        }
    )


def test_the_batcher_gathers_files_while_a_request_is_on_its_way() -> None:
    async def main() -> tuple[list[int], list[object]]:
        fake = FakeClient()
        batcher = HashBatcher(fake)  # type: ignore[arg-type]

        async def one(i: int) -> object:
            await batcher.room.acquire()
            sha = STORED_SHA if i % 2 == 0 else UNKNOWN_SHA
            return await batcher.submit(ByHash(sha, 1, f"{i}.txt"))

        tasks = [asyncio.create_task(one(i)) for i in range(50)]
        for _ in range(5):
            await asyncio.sleep(0)  # every file queued: 2 requests left at once, 48 files wait
        fake.release.set()
        return fake.batches, list(await asyncio.gather(*tasks))

    batches, answers = asyncio.run(main())
    assert batches == [1, 1, 48]
    assert [isinstance(a, Job) for a in answers] == [i % 2 == 0 for i in range(50)]
    assert all(isinstance(a, ProblemError) and a.status == 428 for a in answers[1::2])


def test_a_server_without_the_endpoint_sends_every_file_the_single_way() -> None:
    async def main() -> tuple[list[object], bool, list[int]]:
        fake = FakeClient(fail_with=NotFound(404, "Not Found", ""))
        fake.release.set()
        batcher = HashBatcher(fake)  # type: ignore[arg-type]
        answers = []
        for i in range(3):
            await batcher.room.acquire()
            answers.append(await batcher.submit(ByHash(STORED_SHA, 1, f"{i}.txt")))
        return answers, batcher.disabled, fake.batches

    answers, disabled, batches = asyncio.run(main())
    assert answers == [FALLBACK, FALLBACK, FALLBACK]
    assert disabled
    assert batches == [1]  # asked once, never again
