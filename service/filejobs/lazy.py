"""Modules imported on first use: the API process lists processors but never runs them.

Pillow and pypdf cost about 18 MB of memory in every process that imports them; the API process
only needs each processor's name, params schema and accepted types. A processor module binds
these lazy modules at import and they load when a job first touches them, in a worker child.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name``, executed on its first attribute access (already imported: that module)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
