"""Free TCP ports on 127.0.0.1 and whether something listens on one."""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path


def free_port() -> int:
    """A port the kernel just handed out as free (another process may take it before the caller
    binds it: :class:`~filejobs.testing.Server` retries on "address already in use")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
