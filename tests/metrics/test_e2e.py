"""``GET /metrics`` of a real ``filejobs serve`` on the local backend (jobs run in its own threads),
in single-process mode and in multiprocess mode."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from filejobs.settings import MULTIPROC_ENV
from filejobs.testing import Server, finished, submit, wait_for
from tests.jobs.helpers import wait_until
from tests.metrics.helpers import Scrape
from tests.sample_processors import ALL as TEST_PROCESSORS

pytestmark = pytest.mark.e2e


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()
        for server in started:
            print(f"----- server log (tail) -----\n{server.log_tail(80)}")


def scrape(client: httpx.Client) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    return Scrape(response.text)


@pytest.mark.parametrize("multiprocess", [False, True], ids=["single-process", "multiprocess"])
def test_metrics_of_a_real_server(tmp_path: Path, servers: list[Server], multiprocess: bool) -> None:
    env = {"FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS), "FILEJOBS_WORKERS": "1"}
    directory = tmp_path / "prometheus"
    if multiprocess:
        directory.mkdir()
        env[MULTIPROC_ENV] = str(directory)
    server = Server(tmp_path / "data", env=env, log_path=tmp_path / "server.log")
    servers.append(server)
    server.start()
    content = b"one two\nthree\n"
    labels = {"processor": "inspect", "status": "succeeded"}
    with server.client() as client:
        before = scrape(client)
        assert "filejobs_jobs" in before.families
        assert before.value("filejobs_database_up") == 1
        job = submit(client, content)
        assert wait_for(client, job["id"], finished, timeout=30)["status"] == "succeeded"
        # The worker thread records the attempt just after the row says succeeded.
        after = wait_until(
            lambda: (got := scrape(client)).value("filejobs_jobs_finished_total", **labels) and got,
            timeout=10,
            what="the finished attempt to be counted",
        )
    assert after.value("filejobs_jobs", status="succeeded", processor="inspect") == 1
    assert after.value("filejobs_queue_depth") == 0
    assert after.value("filejobs_uploaded_bytes_total") == len(content)
    assert after.value("filejobs_uploads_total", outcome="accepted") == 1
    assert after.value("filejobs_upload_duration_seconds_count") == 1
    # The job ran in the server's own worker thread (local mode): its process counted it.
    assert after.value("filejobs_job_duration_seconds_count", **labels) == 1
    assert after.value("filejobs_jobs_finished_total", **labels) == 1
    if multiprocess:
        assert any(path.name.startswith("histogram_") for path in directory.iterdir())
        assert "process_cpu_seconds" not in after.families  # per-process; not merged
    else:
        assert "process_cpu_seconds" in after.families
