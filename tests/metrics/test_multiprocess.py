"""prometheus-client's multiprocess mode, with real processes.

The mode is chosen when prometheus_client is imported, from ``PROMETHEUS_MULTIPROC_DIR``, so every
process here is a fresh interpreter started with (or without) the variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from filejobs.cli.serve import prepare_metrics_directory
from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.migrate import upgrade
from filejobs.settings import MULTIPROC_ENV, Settings
from filejobs.testing import base_env, free_port
from tests.conftest import REPO
from tests.jobs.helpers import make_job
from tests.metrics.helpers import Scrape

#: Does what an API process and a worker process do: one accepted upload, one job attempt, one retry.
WRITER = """
import os, sys
from filejobs import metrics
from filejobs.models import JobStatus

size, seconds = int(sys.argv[1]), float(sys.argv[2])
with metrics.track_upload() as upload:
    upload.accepted(size)
metrics.job_attempt_ended("inspect", JobStatus.succeeded, seconds)
metrics.job_retried("flaky")
print(os.getpid())
"""

#: What GET /metrics does, after telling the files that the writers are gone.
READER = """
import sys
from filejobs import metrics
from filejobs.api.exposition import render_metrics
from filejobs.db import Database
from filejobs.settings import Settings

directory = Settings().prometheus_multiproc_dir
for pid in sys.argv[2:]:
    metrics.mark_process_dead(int(pid), directory)
db = Database(sys.argv[1])
payload, content_type = render_metrics(db, directory)
db.dispose()
sys.stdout.write(content_type + "\\n" + payload.decode())
"""

#: What a worker without an API does: serve its (or its host's) metrics on a port.
SERVER = """
import sys, urllib.request
from filejobs import metrics
from filejobs.settings import Settings

metrics.UPLOADED_BYTES.inc(int(sys.argv[2]))
metrics.start_metrics_server(int(sys.argv[1]), Settings().prometheus_multiproc_dir, addr="127.0.0.1")
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10) as response:
    sys.stdout.write(response.headers["Content-Type"] + "\\n" + response.read().decode())
"""


def python(code: str, *args: object, multiproc_dir: Path | None) -> str:
    env = base_env()
    env.pop(MULTIPROC_ENV, None)
    env.pop(MULTIPROC_ENV.lower(), None)
    if multiproc_dir is not None:
        env[MULTIPROC_ENV] = str(multiproc_dir)
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A migrated SQLite database holding one due queued ``inspect`` job."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    db = Database(url)
    try:
        repository.insert_job(db, make_job(processor="inspect"))
    finally:
        db.dispose()
    return url


def test_render_sums_every_process(tmp_path: Path, database_url: str) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    first = int(python(WRITER, 1000, 0.5, multiproc_dir=directory))
    second = int(python(WRITER, 234, 2.0, multiproc_dir=directory))
    assert first != second
    assert {f"counter_{first}.db", f"counter_{second}.db"} <= {p.name for p in directory.iterdir()}

    output = python(READER, database_url, first, second, multiproc_dir=directory)
    content_type, _, text = output.partition("\n")
    assert content_type.startswith("text/plain; version=0.0.4")
    got = Scrape(text)
    assert got.value("filejobs_uploaded_bytes_total") == 1234
    assert got.value("filejobs_uploads_total", outcome="accepted") == 2
    assert got.value("filejobs_uploads_total", outcome="rejected") == 0
    assert got.value("filejobs_upload_duration_seconds_count") == 2
    labels = {"processor": "inspect", "status": "succeeded"}
    assert got.value("filejobs_job_duration_seconds_count", **labels) == 2
    assert got.value("filejobs_job_duration_seconds_sum", **labels) == pytest.approx(2.5)
    assert got.value("filejobs_job_duration_seconds_bucket", le="1.0", **labels) == 1
    assert got.value("filejobs_job_duration_seconds_bucket", le="2.5", **labels) == 2
    assert got.value("filejobs_job_duration_seconds_bucket", le="+Inf", **labels) == 2
    assert got.value("filejobs_jobs_finished_total", **labels) == 2
    assert got.value("filejobs_job_retries_total", processor="flaky") == 2
    # The database's gauges come along, once, from the rendering process.
    assert got.value("filejobs_jobs", status="queued", processor="inspect") == 1
    assert got.value("filejobs_queue_depth") == 1
    assert got.value("filejobs_database_up") == 1


def test_a_worker_metrics_server_in_multiprocess_mode_serves_the_host(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()  # by filejobs serve/worker at startup (see below)
    python(WRITER, 1000, 0.5, multiproc_dir=directory)
    content_type, _, text = python(SERVER, free_port(), 5, multiproc_dir=directory).partition("\n")
    assert content_type.startswith("text/plain")
    got = Scrape(text)
    assert got.value("filejobs_uploaded_bytes_total") == 1005
    assert got.value("filejobs_job_retries_total", processor="flaky") == 1
    assert "filejobs_jobs" not in got.families  # the database's gauges are the API's


def test_a_worker_metrics_server_in_single_process_mode(tmp_path: Path) -> None:
    content_type, _, text = python(SERVER, free_port(), 7, multiproc_dir=None).partition("\n")
    assert content_type.startswith("text/plain")
    got = Scrape(text)
    assert got.value("filejobs_uploaded_bytes_total") == 7
    assert "process_cpu_seconds" in got.families  # the default collectors of this process
    assert "filejobs_jobs" not in got.families


def test_startup_makes_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve and worker make the directory before filejobs.metrics is imported (its metrics open
    their files there): a missing one given, or a private one when processes must share counters."""
    monkeypatch.setenv(MULTIPROC_ENV, "")  # so that the value handed over below is undone
    monkeypatch.delenv(MULTIPROC_ENV)
    given = tmp_path / "missing" / "prometheus"
    settings = Settings(prometheus_multiproc_dir=given)
    assert prepare_metrics_directory(settings, private=False) == given
    assert given.is_dir()

    assert prepare_metrics_directory(Settings(), private=False) is None
    assert MULTIPROC_ENV not in os.environ

    private = prepare_metrics_directory(Settings(), private=True)
    assert private is not None
    assert private.is_dir()
    assert os.environ[MULTIPROC_ENV] == str(private)  # handed over to the processes to come
    assert Settings().prometheus_multiproc_dir == private
    private.rmdir()


#: A Celery worker's pool process records its attempts after a fork; the metric children
#: job_attempt_ended keeps (made here before the fork) must write to the forked process's file.
FORKER = """
import os
from filejobs import metrics
from filejobs.models import JobStatus

metrics.job_attempt_ended("inspect", JobStatus.succeeded, 0.5)
pid = os.fork()
if pid == 0:
    metrics.job_attempt_ended("inspect", JobStatus.succeeded, 2.0)
    metrics.job_attempt_ended("inspect", None, 1.0)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
print(os.getpid(), pid)
"""


def test_attempts_recorded_after_a_fork_go_to_the_forked_process(tmp_path: Path, database_url: str) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    parent, child = map(int, python(FORKER, multiproc_dir=directory).split())
    assert {f"counter_{parent}.db", f"counter_{child}.db"} <= {p.name for p in directory.iterdir()}

    def scrape(*dead: int) -> Scrape:
        return Scrape(python(READER, database_url, *dead, multiproc_dir=directory).partition("\n")[2])

    labels = {"processor": "inspect", "status": "succeeded"}
    both = scrape(parent, child)
    assert both.value("filejobs_jobs_finished_total", **labels) == 2
    assert both.value("filejobs_job_duration_seconds_sum", **labels) == pytest.approx(2.5)
    assert both.value("filejobs_jobs_finished_total", processor="inspect", status="lost") == 1
    # The child's own file holds exactly its two attempts (not the parent's, not nothing).
    (directory / f"counter_{parent}.db").unlink()
    (directory / f"histogram_{parent}.db").unlink()
    alone = scrape(child)
    assert alone.value("filejobs_jobs_finished_total", **labels) == 1
    assert alone.value("filejobs_job_duration_seconds_sum", **labels) == pytest.approx(2.0)
