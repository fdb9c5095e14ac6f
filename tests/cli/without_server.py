"""``python -m tests.cli.without_server [filejobs ARGS]``: the client side as a client-only install
has it, with the server's packages unimportable (a ``sys.meta_path`` blocker). With no ARGS it
imports ``filejobs.client`` and every module of ``filejobs.cli``; with ARGS it runs ``filejobs ARGS``
and exits with its status. Then, if a blocked package was asked for (even where the ImportError was
caught, or only looked for), its last stderr line is ``BLOCKED_IMPORTS {"attempted": [...], "loaded":
[...]}``."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

from filejobs.server_modules import SERVER_MODULES  # a leaf module: imports nothing

#: The server's packages (the ``server`` extra's and what they pull in), by top-level import name.
BLOCKED = frozenset({*SERVER_MODULES, "multipart", "kombu", "billiard"})
MARKER = "BLOCKED_IMPORTS"


class Blocker:
    """A meta path finder that refuses the blocked packages and remembers who asked."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] in BLOCKED:
            self.attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a client-only install)", name=name)
        return None


def import_client_side() -> None:
    for package in ("filejobs.client", "filejobs.cli"):
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__, prefix=f"{package}."):
            if not info.name.endswith(".__main__"):  # that one runs the command
                importlib.import_module(info.name)


def main(args: list[str]) -> int:
    blocker = Blocker()
    sys.meta_path.insert(0, blocker)
    code: int | str | None = 0
    try:
        if args:
            from filejobs.cli import app

            app(args, prog_name="filejobs")
        else:
            import_client_side()
    except SystemExit as exc:
        code = exc.code
    loaded = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
    if blocker.attempts or loaded:
        report = {"attempted": sorted(set(blocker.attempts)), "loaded": loaded}
        print(MARKER, json.dumps(report), file=sys.stderr)
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
