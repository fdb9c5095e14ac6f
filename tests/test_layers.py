"""The package's layers: no module imports one above its own, and only Settings reads the environment.

Every module of ``service/filejobs`` is parsed with ``ast``; every import counts, at module level
and inside functions (the lazy imports too: they are dependencies all the same), ``TYPE_CHECKING``
ones included. The layers, top to bottom (a module may import its own layer and those below):

- **entry**: ``app`` (the app factory and lifespan), ``cli`` (every command; the client commands
  too), ``testing`` (the process harness: it starts servers and workers).
- **api**: ``api`` (routes, middlewares, auth, problem responses, the /metrics exposition) and
  ``http_protocol`` (the HTTP protocol ``filejobs serve`` runs: it answers 408/431 with the API's
  security headers).
- **services**: ``services``, the composition root: the resources of one instance, built from the
  domain and handed to the API by its dependencies.
- **domain**: ``jobs`` (intake, running, dispatching, sweeping, backpressure), ``events`` (change
  feeds, the in-process hub, streams), ``keys`` (API keys), ``uploads`` (the streaming multipart
  receiver intake uses), ``webhooks`` (endpoints, the delivery outbox, the sender) and ``tus``
  (resumable uploads: the tus protocol, its upload store, and the hand-over of a finished upload to
  the intake).
- **base**: what the domain is built on and that knows nothing of it: ``processors`` (the
  processor interface and the built-ins), ``storage`` (and its S3 backend, ``object_storage``, and
  ``direct_io``, the ``O_DIRECT`` writer of its large uploads),
  ``db``, ``models``, ``migrate``, ``schema_version``, ``settings``, ``errors``, ``metrics`` (the
  counters; the database gauges are the API's), ``shutdown``, ``background``, ``ids``,
  ``filenames``, ``multipart_whole``, ``sniff``, ``magic``, ``client_json``, ``memory``, ``lazy`` and the
  package's ``__init__`` (its version).
- **client** stands beside them: ``client`` imports nothing of the server but the package's
  version (it is installed without the server's dependencies), and nothing but the CLI imports it.

``web/`` holds the dashboard's static files (no Python); ``api.routes.dashboard`` serves them.

A module in no layer fails the test: place a new top-level module or package in ``LAYERS``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "service" / "filejobs"

ENTRY, API, SERVICES, DOMAIN, BASE = 4, 3, 2, 1, 0
#: Module name prefixes (relative to ``filejobs``) and their layer; the longest prefix wins.
LAYERS: dict[str, int] = {
    "app": ENTRY,
    "cli": ENTRY,
    "server_process": ENTRY,  # what `filejobs serve` execs into: uvicorn and the app
    "testing": ENTRY,
    "api": API,
    "http_protocol": API,
    "services": SERVICES,
    "jobs": DOMAIN,
    "events": DOMAIN,
    "keys": DOMAIN,
    "uploads": DOMAIN,
    "webhooks": DOMAIN,
    "tus": DOMAIN,
    **dict.fromkeys(
        (
            "",  # the package's __init__
            "processors",
            "storage",
            "direct_io",  # the O_DIRECT writer the local storage writes large uploads with
            "object_storage",  # the S3 backend of storage
            "db",
            "pg_statement",  # a hot statement on the pooled psycopg connection (db's write_one)
            "models",
            "migrate",
            "schema_version",
            "settings",
            "errors",
            "metrics",
            "shutdown",
            "background",
            "ids",
            "filenames",
            "multipart_whole",  # the whole-body multipart split uploads uses
            "sniff",
            "magic",
            "client_json",
            "memory",
            "lazy",
            "server_modules",  # the server extra's import names (a leaf: imports nothing)
        ),
        BASE,
    ),
}
NAMES = {ENTRY: "entry", API: "api", SERVICES: "services", DOMAIN: "domain", BASE: "base"}
CLIENT = "client"

#: Modules allowed to touch ``os.environ``/``os.getenv``, with the functions that do, and why.
ENVIRONMENT: dict[str, tuple[set[str] | None, str]] = {
    "settings": (None, "the one Settings class: it reads the environment"),
    "cli.serve": (
        {"hand_over"},
        "writes, never reads: the app uvicorn builds (in the process serve execs into, or in the "
        "HTTP processes that one spawns) "
        "reads its Settings from the environment, the only way to reach a process that takes no "
        "arguments; serve hands over what it decided there, in one function",
    ),
    "jobs.executor": (
        {"child_env"},
        "passes its whole environment on to the worker children and the worker process spawned (fresh "
        "interpreters that must see what this process sees); it reads no setting from it",
    ),
    "testing": (None, "the process harness builds the environment of the servers it starts"),
}


def module_name(path: Path) -> str:
    """``filejobs.jobs.runner`` as ``jobs.runner``; a package's ``__init__`` as the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def imported(module: str, path: Path, tree: ast.Module) -> Iterator[tuple[str, int]]:
    """Every ``filejobs`` module ``tree`` imports (relative to ``filejobs``), with its line.

    ``from filejobs import keys`` names ``keys`` (a module), ``from filejobs.jobs.worker import
    LocalWorker`` names ``jobs.worker``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "filejobs" or alias.name.startswith("filejobs."):
                    yield alias.name.removeprefix("filejobs").lstrip("."), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == "filejobs" or (node.module or "").startswith("filejobs."):
                name = (node.module or "").removeprefix("filejobs").lstrip(".")
            else:
                continue
            for alias in node.names:
                child = f"{name}.{alias.name}" if name else alias.name
                is_module = (PACKAGE / child.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE / child.replace(".", "/") / "__init__.py"
                ).exists()
                yield (child if is_module else name), node.lineno


def layer_of(module: str) -> int | None:
    """The layer of the longest prefix of ``module`` in LAYERS (the package's, ``""``, at least)."""
    matches = [p for p in LAYERS if p == "" or module == p or module.startswith(p + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def in_client(module: str) -> bool:
    return module == CLIENT or module.startswith(CLIENT + ".")


def test_every_module_has_a_layer() -> None:
    unplaced = [
        module for module, _, _ in modules() if not in_client(module) and not _placed_explicitly(module)
    ]
    assert not unplaced, f"place these modules in tests/test_layers.py's LAYERS: {unplaced}"


def _placed_explicitly(module: str) -> bool:
    return module == "" or any(p and (module == p or module.startswith(p + ".")) for p in LAYERS)


def test_no_module_imports_one_above_its_layer() -> None:
    upward = []
    for module, path, tree in modules():
        if in_client(module):
            continue
        layer = layer_of(module)
        assert layer is not None, module
        for target, line in imported(module, path, tree):
            if in_client(target):
                if layer != ENTRY:
                    upward.append(
                        f"{path.relative_to(PACKAGE)}:{line}: {module} imports the client ({target})"
                    )
                continue
            target_layer = layer_of(target)
            assert target_layer is not None, target
            if target_layer > layer:
                upward.append(
                    f"{path.relative_to(PACKAGE)}:{line}: {module or 'filejobs'} ({NAMES[layer]}) imports "
                    f"{target} ({NAMES[target_layer]})"
                )
    assert not upward, "imports from a higher layer:\n" + "\n".join(dict.fromkeys(upward))


def test_the_client_imports_nothing_of_the_server() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {module} imports {target}"
        for module, path, tree in modules()
        if in_client(module)
        for target, line in imported(module, path, tree)
        if target and not in_client(target)
    ]
    assert not found, "\n".join(found)


def in_harness(module: str) -> bool:
    return module == "testing" or module.startswith("testing.")


def test_nothing_in_the_service_imports_the_harness() -> None:
    """``filejobs.testing`` is for tests and scripts: the service (``app`` and ``cli`` included,
    though they share its layer) never imports it."""
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {module} imports {target}"
        for module, path, tree in modules()
        if not in_harness(module)
        for target, line in imported(module, path, tree)
        if in_harness(target)
    ]
    assert not found, "\n".join(found)


def test_the_harness_imports_no_pytest() -> None:
    """Scripts use ``filejobs.testing`` too: it raises, and the tests' fixtures turn that into a skip
    or a failure."""
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for module, path, tree in modules()
        if in_harness(module)
        for node in ast.walk(tree)
        if (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "pytest" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("pytest", "tests"))
    ]
    assert not found, f"filejobs.testing imports pytest or the tests: {found}"


def test_the_dispatcher_interface_imports_no_dispatcher() -> None:
    path = PACKAGE / "jobs" / "dispatch.py"
    found = list(imported("jobs.dispatch", path, ast.parse(path.read_text(encoding="utf-8"))))
    assert not found, f"jobs/dispatch.py imports {found}"


def environment_uses(tree: ast.Module) -> Iterator[tuple[str | None, int, str]]:
    """``(enclosing function, line, what)`` for each use of ``os.environ``, ``os.environb``,
    ``os.getenv``, ``os.putenv``, ``os.unsetenv``, or of those names imported from ``os``."""
    names = {"environ", "environb", "getenv", "putenv", "unsetenv"}
    imported_names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "os"
        for alias in node.names
        if alias.name in names
    }

    def visit(node: ast.AST, function: str | None) -> Iterator[tuple[str | None, int, str]]:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if (
                isinstance(child, ast.Attribute)
                and child.attr in names
                and isinstance(child.value, ast.Name)
                and child.value.id == "os"
            ):
                yield function, child.lineno, f"os.{child.attr}"
            elif isinstance(child, ast.Name) and child.id in imported_names:
                yield function, child.lineno, child.id
            yield from visit(child, inner)

    yield from visit(tree, None)


def test_only_settings_reads_the_environment() -> None:
    found = []
    for module, path, tree in modules():
        allowed = next(
            (
                functions
                for prefix, (functions, _) in ENVIRONMENT.items()
                if module == prefix or module.startswith(prefix + ".")
            ),
            set(),
        )
        for function, line, what in environment_uses(tree):
            if allowed is None or function in allowed:
                continue
            found.append(f"{path.relative_to(PACKAGE)}:{line}: {what} in {function or 'module level'}")
    assert not found, "the environment is read outside filejobs.settings:\n" + "\n".join(found)


def test_only_the_settings_classes_are_base_settings() -> None:
    """pydantic-settings reads the environment too: Settings (the server's) and ClientSettings
    (``FILEJOBS_URL``/``FILEJOBS_API_KEY``, the client's) are its only users."""
    found = [
        module
        for module, _, tree in modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "pydantic_settings"
    ]
    assert sorted(found) == ["client.settings", "settings"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from filejobs.api.limits import Admission\n", "jobs.x (domain) imports api.limits (api)"),
        ("def f():\n    from filejobs.app import create_app\n", "jobs.x (domain) imports app (entry)"),
        ("from filejobs import services\n", "jobs.x (domain) imports services (services)"),
        ("from ..api import deps\n", "jobs.x (domain) imports api.deps (api)"),
    ],
)
def test_the_check_names_an_upward_import(source: str, expected: str) -> None:
    """The check itself: a domain module importing upward (at module level, in a function,
    relatively) is named with the layers involved."""
    path = PACKAGE / "jobs" / "x.py"
    messages = [
        f"jobs.x ({NAMES[DOMAIN]}) imports {target} ({NAMES[layer]})"
        for target, _ in imported("jobs.x", path, ast.parse(source))
        if (layer := layer_of(target)) is not None and layer > DOMAIN
    ]
    assert messages == [expected]


def test_the_check_finds_environment_reads() -> None:
    source = "import os\nfrom os import getenv as g\nX = os.environ.get('A')\ndef f():\n    return g('B')\n"
    assert [(f, what) for f, _, what in environment_uses(ast.parse(source))] == [
        (None, "os.environ"),
        ("f", "g"),
    ]
