"""What a real server keeps of a PATCH that does not end well: killed with -9 in the middle of a
long one (its last checkpoint), a body that stalls (408: what arrived), a shutdown while a body is
still arriving (503: what arrived). Each time HEAD gives an offset whose bytes are all on disk, and
the upload completes from there into a job with the right SHA-256. The bodies are sent over raw
sockets, so the test decides exactly what the server has received when."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filejobs.testing import Server, ServerFactory, server_factory, status_is, wait_for
from filejobs.tus import local
from tests.sample_processors import ALL as TEST_PROCESSORS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MiB = 1024 * 1024
SIZE = 8 * MiB
DATA = hashlib.sha256(b"durable").digest() * (SIZE // 32)
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    defaults = {"FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS), "FILEJOBS_WORKERS": "1"}
    with server_factory(tmp_path, tmp_path / "data", defaults) as start:
        yield start


def create(server: Server) -> str:
    with server.client() as client:
        response = client.post("/v1/uploads", headers={**TUS, "Upload-Length": str(SIZE)})
        assert response.status_code == 201, response.text
        return str(response.headers["location"])


def open_patch(server: Server, url: str, offset: int, length: int) -> socket.socket:
    """A PATCH whose head is sent, its body left to the caller."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (
        f"PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """The status and headers of the response on ``sock`` (read until the head ends)."""
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"the connection closed without an answer: {data!r}"
        data += piece
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers


def recorded_offset(server: Server) -> int:
    infos = [p for p in (server.data_dir / "tus").glob("*/*/info.json") if not p.parent.name.startswith(".")]
    return local.recorded_offset(infos[0].parent) if infos else 0


def head_offset(server: Server, url: str) -> int:
    with server.client() as client:
        response = client.head(url, headers=TUS)
        assert response.status_code == 200
        return int(response.headers["upload-offset"])


def stored_bytes(server: Server, url: str) -> bytes:
    upload_dir = next(p for p in (server.data_dir / "tus").glob(f"*/{url.rsplit('/', 1)[1]}"))
    return (upload_dir / "data").read_bytes()


def finish(server: Server, url: str, offset: int) -> None:
    """Send the rest from ``offset``; the job must hold exactly DATA."""
    with server.client() as client:
        response = client.patch(
            url,
            headers={**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
            content=DATA[offset:],
        )
        assert response.status_code == 204, response.text
        job_id = response.headers["filejobs-job"].rsplit("/", 1)[1]
        job = wait_for(client, job_id, status_is("succeeded", "failed"), timeout=60)
        assert job["file"]["sha256"] == hashlib.sha256(DATA).hexdigest()
        assert len(client.get("/v1/jobs").json()["items"]) == 1


def wait_until(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_kill9_mid_patch_keeps_the_last_checkpoint(start_server: ServerFactory) -> None:
    server = start_server(resumable_checkpoint_bytes=MiB)
    url = create(server)
    sock = open_patch(server, url, 0, SIZE)
    sent = 3 * MiB + 12345
    sock.sendall(DATA[:sent])  # then nothing more: the PATCH stays open
    # written in 1 MiB batches, each recorded once it is fsynced (the checkpoint is 1 MiB here)
    wait_until(lambda: recorded_offset(server) >= 2 * MiB, "a checkpoint mid-PATCH")
    checkpoint = recorded_offset(server)
    server.kill9()
    sock.close()
    server.spawn()  # the same port and data directory
    server.wait_ready()
    offset = head_offset(server, url)
    assert checkpoint <= offset <= sent  # every checkpointed byte survived kill -9
    assert stored_bytes(server, url)[:offset] == DATA[:offset]
    finish(server, url, offset)


def test_a_stalled_patch_is_408_and_keeps_what_arrived(start_server: ServerFactory) -> None:
    server = start_server(upload_idle_timeout=1)
    url = create(server)
    sock = open_patch(server, url, 0, SIZE)
    sent = 2 * MiB + 777
    sock.sendall(DATA[:sent])
    status, headers = answer(sock)  # after a second of silence
    sock.close()
    assert status == 408
    assert headers["upload-offset"] == str(sent)
    assert head_offset(server, url) == sent
    finish(server, url, sent)


def test_a_patch_still_arriving_at_shutdown_is_503_and_keeps_what_arrived(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    url = create(server)
    sock = open_patch(server, url, 0, SIZE)
    sock.sendall(DATA[:MiB])
    os.kill(server.pid, signal.SIGTERM)
    sent = MiB
    sock.settimeout(0.05)
    status = 0
    headers: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # a slow, steady sender until the server answers
        try:
            sock.sendall(DATA[sent : sent + 64 * 1024])
            sent += 64 * 1024
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        try:
            peek = sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            continue
        if peek:
            status, headers = answer(sock)
            break
    sock.close()
    assert status == 503
    kept = int(headers["upload-offset"])
    assert MiB <= kept <= sent
    server.wait(30)
    server.spawn()
    server.wait_ready()
    assert head_offset(server, url) == kept
    assert stored_bytes(server, url)[:kept] == DATA[:kept]
    finish(server, url, kept)
