"""A client-only install (``pip install filejobs``, without the ``server`` extra): ``filejobs.client``
and the client commands import none of the server's packages and work against a real server; the
service's commands end with one line naming the extra. Run with the server's packages made
unimportable (tests/cli/without_server.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest

from filejobs.server_modules import SERVER_MODULES
from filejobs.testing import Server, base_env
from tests.cli.helpers import make_tree
from tests.cli.without_server import MARKER
from tests.conftest import REPO

INSTALL_LINE = "install filejobs[server] (pip install 'filejobs[server]')"


def without_server(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.cli.without_server", *(str(a) for a in args)],
        cwd=cwd or REPO,
        env=base_env({"COLUMNS": "250", "NO_COLOR": "1"}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def blocked(stderr: str) -> dict[str, Any] | None:
    for line in stderr.splitlines():
        if line.startswith(MARKER + " "):
            report: dict[str, Any] = json.loads(line.removeprefix(MARKER + " "))
            return report
    return None


def test_the_client_and_every_cli_module_import_without_the_server() -> None:
    done = without_server()
    assert done.returncode == 0, done.stderr
    assert blocked(done.stderr) is None, done.stderr


@pytest.mark.e2e
def test_the_client_commands_work_without_the_server(server: Server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": "one two three\n"})
    url = ("--server", server.base_url)
    submitted = without_server("submit", src, *url, "--processor", "upper", "--json", cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    assert blocked(submitted.stderr) is None, submitted.stderr
    job_id = json.loads(submitted.stdout.splitlines()[-1])["job_id"]
    for args in (("wait", job_id, "--timeout", "30"), ("status", job_id, "--json"), ("list",)):
        done = without_server(*args, *url)
        assert done.returncode == 0, (args, done.stderr)
        assert blocked(done.stderr) is None, (args, done.stderr)
    result = without_server("result", job_id, *url, "--output", tmp_path / "out.txt")
    assert result.returncode == 0, result.stderr
    assert blocked(result.stderr) is None, result.stderr
    assert (tmp_path / "out.txt").read_text() == "ONE TWO THREE\n"


@pytest.mark.parametrize(
    "args", [["serve"], ["worker"], ["migrate"], ["keys", "list"], ["keys", "create", "me"]]
)
def test_the_service_commands_say_which_extra_to_install(args: list[str], tmp_path: Path) -> None:
    done = without_server(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    message, *rest = done.stderr.splitlines()
    assert message.startswith(f"filejobs {' '.join(args[:2])}: the server is not installed here"), message
    assert message.endswith(INSTALL_LINE), message
    assert "Traceback" not in done.stderr
    report = blocked(done.stderr)
    assert report is not None
    assert report["loaded"] == [], report  # looked for, never imported
    assert [line for line in rest if not line.startswith(MARKER)] == []


def test_the_server_modules_are_the_server_extra() -> None:
    """SERVER_MODULES (what the service's commands look for and the tests above make unimportable)
    names an import package of every distribution of the extra, and only theirs."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    server = {distribution(r) for r in pyproject["project"]["optional-dependencies"]["server"]}
    assert not {distribution(r) for r in pyproject["project"]["dependencies"]} & server
    modules: dict[str, set[str]] = {dist: set() for dist in server}  # distribution -> its import names
    for module, owners in packages_distributions().items():
        for owner in owners:
            if normal(owner) in modules and not module.startswith("_"):
                modules[normal(owner)].add(module)
    assert set(SERVER_MODULES) <= set().union(*modules.values())
    assert [dist for dist, names in modules.items() if not names & set(SERVER_MODULES)] == []


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution(requirement: str) -> str:
    return normal(re.split(r"[\[<>=;\s]", requirement, maxsplit=1)[0])
