"""The filejobs client (sync and async) and ``filejobs submit`` uploading with tus: the threshold,
a dropped connection resumed from the server's offset, an upload URL resumed, and ``kill -9`` of
the CLI mid-upload followed by a re-run that sends at most one chunk again."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from filejobs.client import AsyncClient, Client
from filejobs.testing import Server, server_factory
from filejobs.tus import local
from tests.cli.helpers import ServerFactory, all_jobs, poll, run_cli, spawn_cli
from tests.sample_processors import ALL as TEST_PROCESSORS
from tests.tus.proxy import CuttingProxy
from tests.tus.test_tuspy import make_file

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MiB = 1024 * 1024


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    defaults = {"FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS), "FILEJOBS_WORKERS": "1"}
    with server_factory(tmp_path, tmp_path / "data", defaults) as start:
        yield start


class Recording(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


def patches(transport: Recording) -> list[int]:
    return [int(r.headers["Upload-Offset"]) for r in transport.requests if r.method == "PATCH"]


def test_auto_uses_tus_from_the_threshold_only(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server()
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"small\n" * 100)
    digest = make_file(big, 3 * MiB)
    transport = Recording()
    with Client(server.base_url, transport=transport, resumable_threshold=MiB, chunk_size=MiB) as client:
        job = client.submit(small)
        assert [r.url.path for r in transport.requests] == ["/v1/jobs", "/v1/jobs"]  # by hash (428), the file
        transport.requests.clear()
        job = client.submit(big, processor="inspect")
        assert job.file.sha256 == digest
        assert [r.method for r in transport.requests] == ["POST", "POST", "PATCH", "PATCH", "PATCH", "GET"]
        assert [r.url.path for r in transport.requests[:2]] == ["/v1/jobs", "/v1/uploads"]
        assert patches(transport) == [0, MiB, 2 * MiB]
        transport.requests.clear()
        again = client.submit(big, processor="inspect", resumable="never")  # the same file and options
        assert again.id == job.id
        assert [r.url.path for r in transport.requests] == ["/v1/jobs"]  # by hash: a replay, no byte sent


def test_the_sync_client_resumes_after_a_dropped_connection(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server()
    size, chunk = 8 * MiB, 4 * MiB
    path = tmp_path / "scan.bin"
    digest = make_file(path, size)
    with CuttingProxy(server.port, cut_after=6 * MiB) as proxy:
        with Client(proxy.url, chunk_size=chunk, backoff=0.01) as client:
            job = client.submit(path, resumable="always")
        assert proxy.cuts == 1
        assert proxy.sent <= size + chunk  # at most the one chunk that was cut is sent again
    assert job.file.sha256 == digest
    assert len(all_jobs(server)) == 1


def test_the_async_client_resumes_an_upload_url(start_server: ServerFactory, tmp_path: Path) -> None:
    """An upload begun elsewhere (here: 2 MiB by hand) goes on from the server's offset."""
    server = start_server()
    size = 5 * MiB
    path = tmp_path / "scan.bin"
    digest = make_file(path, size)
    seen: list[str] = []

    async def run() -> tuple[str, list[int]]:
        transport = httpx.AsyncHTTPTransport()
        sent: list[int] = []

        async def record(request: httpx.Request) -> None:
            if request.method == "PATCH":
                sent.append(int(request.headers["Upload-Offset"]))

        async with AsyncClient(server.base_url, transport=transport, chunk_size=2 * MiB) as client:
            client._http.event_hooks["request"].append(record)
            first = await client.submit(path, resumable="always", on_upload_url=seen.append)
            # a new file: begin by hand, then let the client finish it
            other = tmp_path / "other.bin"
            other.write_bytes(path.read_bytes()[::-1])
            with httpx.Client(base_url=server.base_url) as http:
                url = await asyncio.to_thread(begin_by_hand, http, other)
            sent.clear()
            job = await client.submit(other, resumable="always", upload_url=url)
            assert job.file.sha256 == hashlib.sha256(other.read_bytes()).hexdigest()
            return first.file.sha256, sent

    first_sha, resumed = asyncio.run(run())
    assert first_sha == digest
    assert len(seen) == 1
    assert seen[0].startswith("/v1/uploads/")
    assert resumed == [2 * MiB, 4 * MiB]  # nothing before the server's offset was sent again
    assert len(all_jobs(server)) == 2


def begin_by_hand(http: httpx.Client, path: Path) -> str:
    data = path.read_bytes()
    created = http.post("/v1/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data))})
    url = created.headers["location"]
    patched = http.patch(
        url,
        headers={
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        },
        content=data[: 2 * MiB],
    )
    assert patched.status_code == 204
    return str(url)


def test_kill9_of_the_cli_mid_upload_then_rerun_resumes(start_server: ServerFactory, tmp_path: Path) -> None:
    """``filejobs submit --resumable always`` killed with -9 halfway through a 300 MiB file; the
    same command again resumes the upload its ledger names: at most one chunk is sent twice, and
    the batch ends with exactly one job per file."""
    server = start_server()
    src = tmp_path / "src"
    src.mkdir()
    size, chunk = 300 * MiB, 8 * MiB
    big = src / "big.bin"
    digest = make_file(big, size)
    (src / "small.txt").write_text("a small file, sent the usual way\n")
    ledger = tmp_path / "batch.jsonl"
    with CuttingProxy(server.port, cut_after=None) as proxy:
        args = [
            "submit", src, "--server", proxy.url, "--ledger", ledger, "--wait",
            "--resumable-threshold", "1MiB", "--chunk-size", "8MiB",
        ]  # fmt: skip
        proc = spawn_cli(*args, cwd=tmp_path, log=tmp_path / "first")
        try:
            poll(lambda: upload_offset(server) >= size // 2, timeout=120, what="half of the upload stored")
            assert proc.poll() is None, "the CLI finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        urls = [r["upload_url"] for r in ledger_lines(ledger) if r["event"] == "upload"]
        assert len(urls) == 1
        again = run_cli(*args, "--json")
        assert again.exit_code == 0, again.output
        assert proxy.sent <= size + chunk + 2 * MiB  # + the small file and every request's head
    records = {Path(r["path"]).name: r for r in map(json.loads, again.stdout.splitlines())}
    assert {r["status"] for r in records.values()} == {"succeeded"}
    jobs = all_jobs(server)
    assert sorted(job["file"]["name"] for job in jobs) == ["big.bin", "small.txt"]
    assert next(j for j in jobs if j["file"]["name"] == "big.bin")["file"]["sha256"] == digest


def upload_offset(server: Server) -> int:
    infos = [p for p in (server.data_dir / "tus").glob("*/*/info.json") if not p.parent.name.startswith(".")]
    if not infos:
        return 0
    try:
        return local.recorded_offset(infos[0].parent)
    except (ValueError, FileNotFoundError):
        return 0


def ledger_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
