"""The worker child's memory bound (``FILEJOBS_JOB_MEMORY_LIMIT``): sizes, the limit, what is left.

The bound is ``RLIMIT_AS``, the process's address space: it works unprivileged on every Linux, in
and out of containers (a cgroup would need a delegated cgroup v2 tree), and an allocation past it
fails (``MemoryError`` in Python, ``NULL`` from ``malloc``) instead of waking the kernel's OOM
killer. It counts virtual memory, so the interpreter's own mappings count too (about 200 MiB for a
child with Pillow loaded): :func:`headroom` is what a job may still map.
"""

from __future__ import annotations

import os
import re

try:
    import resource
except ImportError:  # not a POSIX system: no limit can be set
    resource = None  # type: ignore[assignment]

#: A processor that ran out of memory fails the job with this error code (not retried: the same
#: file under the same limit runs out again); :func:`filejobs.jobs.messages.out_of_memory` says so.
RESOURCE_EXHAUSTED = "resource_exhausted"

#: The exit status of a child that ran out of memory outside a processor's error handling.
OUT_OF_MEMORY_EXIT = 12  # ENOMEM


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?)b?|b)?", re.IGNORECASE)
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(value: str) -> int | None:
    """``1073741824``, ``512MiB``/``512M``/``512m`` (binary), ``500MB`` (decimal), ``1.5GiB``;
    None when ``value`` is none of these."""
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        return None
    number, unit, binary = match.groups()
    if unit is None:
        return int(float(number))
    # A bare letter or KiB/MiB/GiB: powers of 1024 (as ulimit and Docker read them); kB/MB/GB: 1000.
    base = 1024 if binary or not value.strip().lower().endswith("b") else 1000
    return int(float(number) * base ** _POWERS[unit.lower()])


def address_space() -> int:
    """Bytes of address space this process maps now (what ``RLIMIT_AS`` counts); 0 if unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def limit_address_space(limit: int) -> None:
    """Bound this process's address space to ``limit`` bytes (0: only the hard limit, if any).

    Only the soft limit is set, so a later call may raise it again (up to the hard limit).
    """
    if resource is None or not hasattr(resource, "RLIMIT_AS"):
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = hard if limit <= 0 else limit
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def headroom(limit: int) -> int | None:
    """Bytes this process may still map under ``limit``; None when ``limit`` is 0 (no bound)."""
    if limit <= 0:
        return None
    return max(0, limit - address_space())
