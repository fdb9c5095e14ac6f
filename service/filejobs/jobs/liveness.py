"""Whether the process named in a lease owner (``host:pid:…``) is dead: on this host only.

Workers' job leases and uploads' Idempotency-Key holds both name their process this way, so a
restarted service takes back what a killed one held at once instead of waiting for the lease.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def owner_is_dead_here(owner: str) -> bool:
    """True when ``owner`` names a process on this host whose process no longer exists.

    A reused pid only makes us wait for the lease, the safe direction.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet: dead, though ``kill(pid, 0)`` succeeds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, so split after the last ")".
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
