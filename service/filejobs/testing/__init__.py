"""The process harness of filejobs, for its tests and scripts (like ``procrastinate.testing``).

Real processes, started within a deadline and always cleaned up (their logs kept for a failure):

- :class:`Server`: ``filejobs serve`` on a free port with its own data directory;
  :func:`server_factory` starts several and kills them all; :func:`keys_cli` runs ``filejobs keys``.
- :class:`Worker`: ``filejobs worker`` (Celery), ready at its "ready." line.
- :class:`Cluster`: API servers and workers on one PostgreSQL database and one broker queue.
- :class:`ManagedProcess`: the base of both (spawn, wait ready, stop, ``kill -9``, logs),
  :class:`HttpProcess` for any HTTP server (the benchmark's baseline apps).
- :func:`fresh_postgres_database`: a new database, dropped afterwards; brokers in
  :mod:`filejobs.testing.brokers`; :class:`Unavailable` when the machine lacks a service.
- :func:`submit` (POST a file, insist on 202) and :func:`post_file`, for a ``TestClient`` or an
  ``httpx.Client``; :func:`wait_for` (the long-poll), :func:`wait_until`; :func:`make_job`.

Scenario drivers shared by tests and scripts: :mod:`~filejobs.testing.ledger` (the kill ledger),
:mod:`~filejobs.testing.soak` (concurrent uploaders), :mod:`~filejobs.testing.stalled` (stalled
uploads on a socket). Nothing here imports pytest; nothing in the service imports this package.
It needs the ``dev`` extra (psutil).
"""

from filejobs.testing.cluster import Cluster, lease_pid
from filejobs.testing.environment import base_env
from filejobs.testing.ports import free_port, free_port_outside_ephemeral_range, port_open
from filejobs.testing.postgres import POSTGRES_ADMIN_URL, fresh_postgres_database
from filejobs.testing.processes import ManagedProcess, ProcessError, gone, kill_everything, wait_gone
from filejobs.testing.processors import SLEEP
from filejobs.testing.rows import make_job
from filejobs.testing.server import HttpProcess, Server, ServerError, ServerFactory, keys_cli, server_factory
from filejobs.testing.services import Unavailable, require_binary, require_port
from filejobs.testing.submit import bearer, post_file, submit
from filejobs.testing.waiting import TERMINAL, finished, status_is, wait_for, wait_until
from filejobs.testing.worker import Worker, WorkerError

__all__ = [
    "POSTGRES_ADMIN_URL",
    "SLEEP",
    "TERMINAL",
    "Cluster",
    "HttpProcess",
    "ManagedProcess",
    "ProcessError",
    "Server",
    "ServerError",
    "ServerFactory",
    "Unavailable",
    "Worker",
    "WorkerError",
    "base_env",
    "bearer",
    "finished",
    "free_port",
    "free_port_outside_ephemeral_range",
    "fresh_postgres_database",
    "gone",
    "keys_cli",
    "kill_everything",
    "lease_pid",
    "make_job",
    "port_open",
    "post_file",
    "require_binary",
    "require_port",
    "server_factory",
    "status_is",
    "submit",
    "wait_for",
    "wait_gone",
    "wait_until",
]
