"""API servers and Celery workers on one PostgreSQL database, one broker queue and one data
directory: the scale-out deployment, in processes on this machine.

Every process is started with an explicit environment (:meth:`Cluster.env`), shares one data
directory (workers read the uploads the API stored) and is killed by :meth:`Cluster.close`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import httpx

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.models import Job
from filejobs.settings import Settings
from filejobs.testing.environment import base_env
from filejobs.testing.processes import ProcessError
from filejobs.testing.processors import SLEEP
from filejobs.testing.server import Server
from filejobs.testing.submit import submit
from filejobs.testing.waiting import TERMINAL
from filejobs.testing.worker import Worker

#: filejobs.jobs.runner's line when a job is claimed: ``job <id>: running <processor> (attempt N)``.
RUNNING_LINE = re.compile(r"job ([0-9a-f-]{36}): running (\S+) \(attempt (\d+)\)")
MIGRATE_TIMEOUT = 60.0


class Cluster:
    """API servers and workers of one run: one database, one broker queue, one data directory
    (``root/data``; logs in ``root``). ``processors``: the ``FILEJOBS_PROCESSORS`` specs every
    process loads besides the built-ins."""

    def __init__(
        self,
        root: Path,
        *,
        database_url: str,
        broker_url: str,
        queue: str,
        processors: Sequence[str] = (SLEEP,),
        storage_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.database_url = database_url
        self.broker_url = broker_url
        self.queue = queue
        self.processors = list(processors)
        #: An object store's settings (FILEJOBS_STORAGE_URL=s3://…, credentials): then every
        #: process has a data directory of its own (scratch only), nothing shared but the bucket.
        self.storage_env = dict(storage_env or {})
        self.servers: list[Server] = []
        self.workers: list[Worker] = []
        self._db: Database | None = None
        self._migrated = False

    # ---- configuration --------------------------------------------------------------------

    def env(self, **overrides: object) -> dict[str, str]:
        """The FILEJOBS_* settings every process of the cluster shares (``lease_seconds=2`` →
        ``FILEJOBS_LEASE_SECONDS=2``)."""
        values = {
            "FILEJOBS_BACKEND": "celery",
            "FILEJOBS_DATABASE_URL": self.database_url,
            "FILEJOBS_BROKER_URL": self.broker_url,
            "FILEJOBS_QUEUE": self.queue,
            "FILEJOBS_PROCESSORS": ",".join(self.processors),
            "FILEJOBS_DATA_DIR": str(self.data_dir),
            **self.storage_env,
        }
        values.update({f"FILEJOBS_{key.upper()}": str(value) for key, value in overrides.items()})
        return values

    def process_data_dir(self, name: str) -> Path:
        """The data directory of the process ``name``: the shared one, or (object storage) its own."""
        return self.root / f"{name}-data" if self.storage_env else self.data_dir

    @property
    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            broker_url=self.broker_url,
            queue=self.queue,
            backend="celery",
            data_dir=self.data_dir,
        )

    # ---- processes ------------------------------------------------------------------------

    def migrate(self) -> None:
        """``filejobs migrate`` once, before any server or worker starts."""
        if self._migrated:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "filejobs.cli", "migrate"],
            cwd=self.root,
            env=base_env(self.env()),
            capture_output=True,
            timeout=MIGRATE_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise ProcessError(f"filejobs migrate failed:\n{done.stderr.decode(errors='replace')}")
        self._migrated = True

    def api(self, **overrides: object) -> Server:
        """A started ``filejobs serve`` (blocks until /healthz answers)."""
        self.migrate()
        data_dir = self.process_data_dir(f"api-{len(self.servers) + 1}")
        server = Server(
            data_dir,
            env=self.env(data_dir=data_dir, **overrides),
            log_path=self.root / f"api-{len(self.servers) + 1}.log",
        )
        self.servers.append(server)
        return server.start()

    def worker(self, concurrency: int = 1, pool: str | None = None, **overrides: object) -> Worker:
        """A spawned ``filejobs worker``; call ``wait_ready()`` (or use :meth:`workers_ready`)."""
        self.migrate()
        name = f"worker-{len(self.workers) + 1}"
        data_dir = self.process_data_dir(name)
        worker = Worker(
            data_dir,
            env=self.env(data_dir=data_dir, **overrides),
            concurrency=concurrency,
            pool=pool,
            log_path=self.root / f"{name}.log",
            name=name,
        )
        self.workers.append(worker)
        return worker.spawn()

    def started_worker(self, concurrency: int = 1, pool: str | None = None, **overrides: object) -> Worker:
        worker = self.worker(concurrency, pool, **overrides)
        worker.wait_ready()
        return worker

    @staticmethod
    def workers_ready(*workers: Worker) -> None:
        for worker in workers:
            worker.wait_ready()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for server in self.servers:
            server.stop()
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def print_logs(self, lines: int = 60) -> None:
        for index, server in enumerate(self.servers, 1):
            print(f"----- api-{index} log (tail) -----\n{server.log_tail(lines)}")
        for worker in self.workers:
            print(f"----- {worker.name} log (tail) -----\n{worker.log_tail(lines)}")

    # ---- state ----------------------------------------------------------------------------

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.settings.resolved_database_url)
        return self._db

    def job(self, job_id: str) -> Job:
        job = repository.get_job(self.db, job_id)
        assert job is not None, f"job {job_id} is gone"
        return job

    def jobs(self, job_ids: Iterable[str]) -> dict[str, Job]:
        return {job_id: self.job(job_id) for job_id in job_ids}

    def wait_jobs(
        self, job_ids: Iterable[str], *, timeout: float, statuses: Iterable[str] = TERMINAL
    ) -> dict[str, Job]:
        """Poll the rows until every job is in one of ``statuses``; return the rows (AssertionError
        naming the stragglers after ``timeout`` s)."""
        ids, wanted = list(job_ids), set(statuses)
        last: dict[str, Job] = {}

        def all_there() -> bool:
            last.update(self.jobs(ids))
            return all(job.status in wanted for job in last.values())

        deadline = time.monotonic() + timeout
        while not all_there():
            if time.monotonic() >= deadline:
                pending = {i: (j.status, j.attempts) for i, j in last.items() if j.status not in wanted}
                raise AssertionError(
                    f"{len(pending)} job(s) not {'/'.join(sorted(wanted))} after {timeout:g} s: {pending}"
                )
            time.sleep(0.1)
        return last

    def running_lines(self, workers: Iterable[Worker] | None = None) -> list[tuple[str, str, int, str]]:
        """Every "job <id>: running …" line of the workers' logs: (job id, processor, attempt, worker)."""
        found = []
        for worker in self.workers if workers is None else workers:
            for match in RUNNING_LINE.finditer(worker.log_text()):
                found.append((match.group(1), match.group(2), int(match.group(3)), worker.name))
        return found

    def runs_per_job(self) -> Counter[str]:
        return Counter(job_id for job_id, _, _, _ in self.running_lines())

    def warm_up(self, client: httpx.Client, workers: Iterable[Worker]) -> None:
        """Run one short ``sleep`` job on each concurrency-1 worker first, so that each pool process
        has its processor process before the job a caller measures starts.

        The lease is not renewed while a processor process starts (``ChildProcess.start`` waits for
        it without ticking), so with a 2 s lease a first start slowed down by a loaded machine
        could expire the lease and requeue the job before anything was killed. Prefetch 1 and
        acks-late give each idle worker one of the jobs.
        """
        workers = list(workers)
        ids = [submit(client, processor="sleep", params={"seconds": 1, "steps": 10})["id"] for _ in workers]
        rows = self.wait_jobs(ids, timeout=30)
        assert {job.status for job in rows.values()} == {"succeeded"}, rows
        for worker in workers:
            assert worker.processor_children(), f"{worker.name} ran no warm-up job"


def lease_pid(owner: str | None) -> int:
    """The process in a lease owner ``host:pid:random:n``."""
    assert owner, "the job has no lease owner"
    return int(owner.split(":")[1])
