"""The wheel, built for real and installed client-only (``pip install filejobs``: its dependencies
from the package index, not the server extra) into a fresh venv: the ``filejobs`` command and the
client work, the service's commands say which extra to install. Slow (about 25 s, most of it the
index): ``-m "not install"`` leaves it out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_client_only import INSTALL_LINE
from tests.conftest import REPO

pytestmark = [pytest.mark.install, pytest.mark.timeout(180)]

#: Distributions of the server extra that must not come with a client-only install.
SERVER_DISTRIBUTIONS = {
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "sqlmodel",
    "celery",
    "pillow",
    "pypdf",
}


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FILEJOBS_")}
    env |= {"COLUMNS": "120", "NO_COLOR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=150, check=False
    )


def site_packages_size(venv: Path) -> int:
    (site,) = venv.glob("lib/python*/site-packages")
    return sum(path.stat().st_size for path in site.rglob("*") if path.is_file())


def test_a_client_only_install_of_the_wheel(tmp_path: Path) -> None:
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp_path / "dist",
        REPO,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("filejobs-*.whl")
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python, filejobs = venv / "bin" / "python", venv / "bin" / "filejobs"
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    names = run(
        python,
        "-c",
        "import importlib.metadata as m; print(*(d.name for d in m.distributions()))",
        cwd=tmp_path,
    )
    distributions = {name.lower() for name in names.stdout.split()}
    assert "filejobs" in distributions
    assert distributions & SERVER_DISTRIBUTIONS == set()
    print(f"client-only install: {len(distributions)} distributions, {site_packages_size(venv) / 1e6:.0f} MB")

    usage = run(filejobs, "--help", cwd=tmp_path)
    assert usage.returncode == 0, usage.stderr
    assert "submit" in usage.stdout
    submit = run(filejobs, "submit", "--help", cwd=tmp_path)
    assert submit.returncode == 0, submit.stderr
    assert "--processor" in submit.stdout
    client = run(
        python, "-c", "from filejobs.client import AsyncClient, Client; print(Client.__name__)", cwd=tmp_path
    )
    assert client.stdout.strip() == "Client", client.stderr

    serve = run(filejobs, "serve", cwd=tmp_path)
    assert serve.returncode == 2
    assert serve.stderr.splitlines() == [serve.stderr.strip()], serve.stderr  # one line, no traceback
    assert serve.stderr.startswith("filejobs serve: the server is not installed here"), serve.stderr
    assert serve.stderr.strip().endswith(INSTALL_LINE), serve.stderr
