"""What the scale-out tests run: API servers and Celery workers on one PostgreSQL database and one
broker queue, private brokers a test may stop and start, and bounded waits on real state.

Every process is started with an explicit environment (:func:`Cluster.env`), shares one data
directory (workers read the uploads the API stored) and is killed when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import psutil
import pytest

from filejobs.db import Database
from filejobs.jobs import repository
from filejobs.models import Job
from filejobs.settings import Settings
from tests.e2e.server import Server, base_env, kill_everything
from tests.e2e.worker import Worker
from tests.jobs.helpers import wait_until
from tests.sample_processors import ALL as TEST_PROCESSORS

T = TypeVar("T")

TERMINAL = ("succeeded", "failed", "cancelled")
#: filejobs.jobs.runner's line when a job is claimed: ``job <id>: running <processor> (attempt N)``.
RUNNING_LINE = re.compile(r"job ([0-9a-f-]{36}): running (\S+) \(attempt (\d+)\)")
MIGRATE_TIMEOUT = 60.0


# ---- waiting ----------------------------------------------------------------------------------


def free_port_outside_ephemeral_range() -> int:
    """A free TCP port in 20000-32767, below the kernel's ephemeral range.

    A broker restarted on "its" port must find it free; a port the kernel hands out for outgoing
    connections could be taken by one (a reconnecting client) while the broker is down. The range
    also stays clear of 35672-35682, where every ``rabbitmqctl`` call listens for Erlang
    distribution (a node started on 35672 fails with ``eaddrinuse`` while a ``rabbitmqctl`` runs).
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(20000, max(20001, min(low, 32768)))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def require_binary(name: str) -> str:
    """The path of an installed program; skip without it (fail under FILEJOBS_REQUIRE_SERVICES=1,
    like :func:`tests.services.require_port`)."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed"
        if os.environ.get("FILEJOBS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}; FILEJOBS_REQUIRE_SERVICES=1 makes that a failure")
        pytest.skip(reason)
    return path


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ---- the HTTP side ----------------------------------------------------------------------------


def submit(
    client: httpx.Client,
    content: bytes = b"hello world\n",
    *,
    name: str = "hello.txt",
    processor: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST /v1/jobs; insist on 202 and return the job body."""
    data: dict[str, str] = {}
    if processor is not None:
        data["processor"] = processor
    if params is not None:
        data["params"] = json.dumps(params)
    response = client.post("/v1/jobs", files={"file": (name, content, "text/plain")}, data=data)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


# ---- the cluster ------------------------------------------------------------------------------


class Cluster:
    """API servers and workers of one test: one database, one broker queue, one data directory."""

    def __init__(
        self,
        root: Path,
        *,
        database_url: str,
        broker_url: str,
        queue: str,
        storage_env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.database_url = database_url
        self.broker_url = broker_url
        self.queue = queue
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
            "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS),
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
        assert done.returncode == 0, done.stderr.decode(errors="replace")
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
        """Poll the rows until every job is in one of ``statuses``; return the rows."""
        ids, wanted = list(job_ids), set(statuses)
        last: dict[str, Job] = {}

        def all_there() -> bool:
            last.update(self.jobs(ids))
            return all(job.status in wanted for job in last.values())

        deadline = time.monotonic() + timeout
        while not all_there():
            if time.monotonic() >= deadline:
                pending = {i: (j.status, j.attempts) for i, j in last.items() if j.status not in wanted}
                pytest.fail(
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


def record(request: pytest.FixtureRequest, name: str, seconds: float) -> None:
    """Keep a measured duration with the test's report (``user_properties``: the JUnit XML's
    properties; shown by ``-rP``), without asserting anything about it."""
    request.node.user_properties.append((name, round(seconds, 2)))
    print(f"{request.node.name}: {name} = {seconds:.2f}")


def lease_pid(owner: str | None) -> int:
    """The process in a lease owner ``host:pid:random:n``."""
    assert owner, "the job has no lease owner"
    return int(owner.split(":")[1])


# ---- brokers: queue cleanup on the machine's brokers ------------------------------------------

REDIS_PRIORITY_SEP = "\x06\x16"


def cleanup_redis_queue(url: str, queue: str) -> None:
    """Delete what kombu keeps for ``queue`` in Redis: the lists (one per priority step), the
    exchange's binding sets, and unacknowledged copies held for workers that were killed."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.delete(
            queue,
            *(f"{queue}{REDIS_PRIORITY_SEP}{p}" for p in range(1, 10)),
            f"_kombu.binding.{queue}",
            f"_kombu.binding_permanent.{queue}",
        )
        for tag, payload in client.hscan_iter("unacked"):
            with contextlib.suppress(ValueError, TypeError):
                _message, exchange, routing_key = json.loads(payload)
                if queue in (exchange, routing_key):
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)
    finally:
        client.close()


def cleanup_amqp_queue(url: str, queue: str) -> None:
    """Delete the queue and its exchange on RabbitMQ."""
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        for delete in ("queue_delete", "exchange_delete"):
            with contextlib.suppress(Exception):
                channel = conn.channel()
                getattr(channel, delete)(queue)
                channel.close()


def new_queue_name() -> str:
    return f"fj-test-{uuid.uuid4().hex}"


# ---- private brokers --------------------------------------------------------------------------


class PrivateBroker:
    """A broker process of the test's own, which it may stop and start on the same port."""

    kind = ""
    url = ""

    def start(self) -> float:
        """Start (or restart) the broker; returns the seconds it took to accept connections."""
        raise NotImplementedError

    def stop(self) -> float:
        """Stop it (its port refuses connections when this returns); returns the seconds it took."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop it for good and remove what it left behind."""
        raise NotImplementedError

    def log_tail(self, lines: int = 40) -> str:
        return ""


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class PrivateRedis(PrivateBroker):
    """``redis-server --port <free> --save "" --appendonly no``: a restart loses every message."""

    kind = "redis"
    START_TIMEOUT = 20.0

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port_outside_ephemeral_range()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> float:
        binary = require_binary("redis-server")
        assert self.proc is None or self.proc.poll() is not None, "redis is already running"
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self._answers, timeout=self.START_TIMEOUT, what=f"redis on port {self.port}")
        return time.monotonic() - started

    def _answers(self) -> bool:
        import redis

        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}")
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> float:
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        wait_until(lambda: not port_open(self.port), timeout=10, what=f"port {self.port} to close")
        return time.monotonic() - started

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


def rabbitmq_sbin() -> Path | None:
    """The directory of RabbitMQ's own scripts (not the Debian wrappers, which su to the
    rabbitmq user and read the machine node's cookie)."""
    for candidate in (
        Path("/usr/lib/rabbitmq/bin/rabbitmq-server"),
        *Path("/usr/lib/rabbitmq/lib").glob("*/sbin/rabbitmq-server"),
    ):
        real = candidate.resolve()
        if (
            real.is_file()
            and (real.parent / "rabbitmqctl").exists()
            and "su rabbitmq" not in real.read_text(errors="replace")
        ):
            return real.parent
    return None


class PrivateRabbitMQ(PrivateBroker):
    """A RabbitMQ node of the test's own: its name, ports, data, logs, config and Erlang cookie
    (in a private HOME), so the machine's node is never touched. Queues are durable and messages
    persistent, so a restart keeps what the node held."""

    kind = "amqp"
    START_TIMEOUT = 90.0

    def __init__(self, directory: Path) -> None:
        require_binary("rabbitmq-server")
        sbin = rabbitmq_sbin()
        if sbin is None:
            pytest.skip("RabbitMQ's own server scripts (behind the rabbitmq-server wrapper) are not found")
        self.sbin = sbin
        self.directory = directory
        self.node = f"fj-{uuid.uuid4().hex[:10]}@localhost"
        self.port = free_port_outside_ephemeral_range()
        self.dist_port = free_port_outside_ephemeral_range()
        while self.dist_port == self.port:
            self.dist_port = free_port_outside_ephemeral_range()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.home = directory / "home"
        for sub in ("home", "mnesia", "log"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (directory / "enabled_plugins").write_text("[].\n")
        # Our own env file, instead of the machine's (which names the machine's node).
        (directory / "rabbitmq-env.conf").write_text(
            'ERL_EPMD_ADDRESS=127.0.0.1\nexport ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
        )
        self.log_path = directory / "server.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._seen: dict[int, psutil.Process] = {}
        self.running_app = False

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "FILEJOBS_"))}
        env.update(
            {
                "HOME": str(self.home),
                "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.directory / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
                "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
                "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            }
        )
        return env

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [str(self.sbin / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 0, f"rabbitmqctl {' '.join(args)} failed ({done.returncode}):\n{output}"
        return output

    def start(self) -> float:
        """Boot the node (first call) or start its app again; wait until AMQP answers."""
        started = time.monotonic()
        if self.proc is None or self.proc.poll() is not None:
            if self._log is None:
                self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
            self.proc = subprocess.Popen(
                [str(self.sbin / "rabbitmq-server")],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._seen[self.proc.pid] = psutil.Process(self.proc.pid)
        else:
            self.ctl("start_app")
        wait_until(self._answers, timeout=self.START_TIMEOUT, what=f"RabbitMQ node {self.node}", interval=0.1)
        self.running_app = True
        self._remember()
        return time.monotonic() - started

    def _remember(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._seen.setdefault(child.pid, child)

    def _answers(self) -> bool:
        from kombu import Connection

        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.log_tail()}")
        if not port_open(self.port):
            return False
        try:
            with Connection(self.url, connect_timeout=2) as conn:
                conn.connect()
                conn.channel().close()
            return True
        except Exception:
            return False

    def stop(self) -> float:
        """``rabbitmqctl stop_app``: the node stays up, AMQP is refused until :meth:`start`."""
        started = time.monotonic()
        self.ctl("stop_app")
        self.running_app = False
        wait_until(lambda: not port_open(self.port), timeout=30, what=f"port {self.port} to close")
        return time.monotonic() - started

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.ctl("stop", timeout=30)
            self._remember()
        kill_everything(self.proc, self._seen.values())
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted((self.directory / "log").glob("*.log"))
        return "\n".join([_tail(self.log_path, lines), *(_tail(p, lines) for p in logs[:1])])
