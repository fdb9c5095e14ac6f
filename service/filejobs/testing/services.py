"""The machine's services the harness needs (PostgreSQL, a broker, a program): :class:`Unavailable`
when one is missing, which a test turns into a skip (see ``tests/services.py``) and a script into
an error message."""

from __future__ import annotations

import shutil
import socket


class Unavailable(RuntimeError):
    """A service or program the harness needs is not there; the message says which and why."""


def require_port(name: str, host: str, port: int) -> None:
    """Raise :class:`Unavailable` unless ``host:port`` accepts a TCP connection within 2 s."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        raise Unavailable(f"{name} is not reachable at {host}:{port} ({exc})") from exc


def require_binary(name: str) -> str:
    """The path of an installed program; :class:`Unavailable` without it."""
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"{name} is not installed")
    return path
