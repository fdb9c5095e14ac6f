"""The environment of the processes the harness starts: the caller's, without its ``FILEJOBS_*``
settings, and with the caller's import path, so that a child imports the same ``filejobs`` (and
the same plugins, e.g. the tests' processors) as the process that started it."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import filejobs

#: The directory that holds the ``filejobs`` package this process imported (``service/`` in a
#: checkout, ``site-packages`` in an install).
SOURCE_ROOT = Path(filejobs.__file__).resolve().parents[1]


def _interpreter_dirs() -> tuple[Path, ...]:
    return tuple({Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


def caller_paths() -> list[str]:
    """This process's import path without the interpreter's own directories (the standard library,
    site-packages): the checkout a test or script runs from, the source root ``filejobs`` came
    from. A child started with these on ``PYTHONPATH`` imports what this process imports."""
    own = _interpreter_dirs()
    paths: list[str] = []
    for entry in [str(SOURCE_ROOT), *sys.path]:
        path = Path(entry or ".").resolve()  # "": the working directory
        if not path.is_dir() or any(path == d or d in path.parents for d in own):
            continue
        if str(path) not in paths:
            paths.append(str(path))
    return paths


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without ``FILEJOBS_*``, the caller's import path (see
    :func:`caller_paths`) first on ``PYTHONPATH``, unbuffered output, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILEJOBS_")}
    paths = [*caller_paths(), *env.get("PYTHONPATH", "").split(os.pathsep)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env
