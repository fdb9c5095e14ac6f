"""Brokers for the scale-out harness: deleting a run's queue on the machine's Redis or RabbitMQ,
and private broker processes (a Redis, a RabbitMQ node) that a test may stop and start on the same
port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO

import psutil

from filejobs.testing.ports import free_port_outside_ephemeral_range, port_open
from filejobs.testing.processes import ProcessError, kill_everything
from filejobs.testing.services import Unavailable, require_binary
from filejobs.testing.waiting import wait_until


class BrokerError(ProcessError):
    """A private broker exited or did not answer."""


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
    from kombu.connection import Connection

    with Connection(url, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
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
            raise BrokerError(f"redis-server exited with {self.proc.returncode}:\n{self.log_tail()}")
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
            raise Unavailable(
                "RabbitMQ's own server scripts (behind the rabbitmq-server wrapper) are not found"
            )
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
        if done.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} failed ({done.returncode}):\n{output}")
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
        from kombu.connection import Connection

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BrokerError(f"rabbitmq-server exited with {self.proc.returncode}:\n{self.log_tail()}")
        if not port_open(self.port):
            return False
        try:
            with Connection(self.url, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
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
