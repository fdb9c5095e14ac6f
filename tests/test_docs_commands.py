"""The README and docs/ show only commands that exist, and link only to pages and headings that exist.

Every fenced block marked ``sh``, ``bash``, ``shell`` or ``console`` is read as shell commands (in a
``console`` block, only the lines after a ``$`` prompt): a ``filejobs`` command must name a real
subcommand of the CLI and only options it has; ``python -m scripts.X`` / ``python scripts/x.py``
must name a module or file of this checkout, ``pytest`` only paths and tests that exist,
``pip install`` only local paths and extras that exist, and ``docker exec``/``docker compose run``
only real ``filejobs`` commands. Other commands (curl, docker itself…) are left alone.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from filejobs.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "examples").glob("*/README.md")),
]
SHELL = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w-]*)")
OPERATORS = {"&&", "||", "|", ";", "&", "(", ")"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {shlex.join(self.argv)}"


def shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command line) of every shell block; continuation lines joined, prompts dropped."""
    language: str | None = None
    pending, start = "", 0
    for number, line in enumerate(text.split("\n"), 1):
        fence = FENCE.match(line)
        if fence:
            language = fence.group(2) if language is None else None
            continue
        if language not in SHELL:
            continue
        stripped = line.strip()
        if not pending:
            if stripped.startswith("$ "):
                stripped = stripped[2:]
            elif language == "console":
                continue  # output
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped
        pending = ""


def commands_of(page: Path, text: str) -> Iterator[Command]:
    for number, line in shell_lines(text):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token in OPERATORS:
                while argv and ASSIGNMENT.match(argv[0]):
                    argv.pop(0)  # VAR=value before a command
                if argv:
                    yield Command(page, number, tuple(argv))
                argv = []
            else:
                argv.append(token)


def all_commands() -> list[Command]:
    return [command for page in PAGES for command in commands_of(page, page.read_text())]


def cli_tree() -> Any:
    return typer.main.get_command(app)


def check_filejobs(args: list[str]) -> list[str]:
    """What is wrong with ``filejobs ARGS``: an unknown subcommand or option."""
    command = cli_tree()
    path = ["filejobs"]
    while args and hasattr(command, "commands"):
        name = args.pop(0)
        if name in ("--help", "-h"):
            return []
        if name not in command.commands:
            return [f"no command {' '.join([*path, name])!r}"]
        command, path = command.commands[name], [*path, name]
    if hasattr(command, "commands"):
        return []  # a group alone prints its help
    options = {"--help"} | {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    return [
        f"{' '.join(path)} has no option {arg.split('=')[0]!r}"
        for arg in args
        if arg.startswith("-") and arg != "-" and arg.split("=")[0] not in options
    ]


def check_python(args: list[str]) -> list[str]:
    if args[:1] == ["-m"] and len(args) > 1:
        module = args[1]
        if not module.startswith("scripts."):
            return []
        base = ROOT.joinpath(*module.split("."))
        return (
            []
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
            else [f"no module {module}"]
        )
    if args and args[0].endswith(".py"):
        return [] if (ROOT / args[0]).is_file() else [f"no file {args[0]}"]
    return []


def check_pytest(args: list[str]) -> list[str]:
    faults = []
    takes_value = {"-k", "-m", "-p", "-c", "-o", "--maxfail", "--timeout", "--rootdir"}
    skip = False
    for arg in args:
        if skip or arg.startswith("-"):
            skip = arg in takes_value
            continue
        path, _, test = arg.partition("::")
        if not (ROOT / path).exists():
            faults.append(f"no path {path}")
        elif test and not re.search(
            rf"def {re.escape(test.split('::')[-1].split('[')[0])}\(", (ROOT / path).read_text()
        ):
            faults.append(f"no test {arg}")
    return faults


def check_pip(args: list[str]) -> list[str]:
    if args[:1] != ["install"]:
        return []
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
    faults = []
    for arg in args[1:]:
        if arg.startswith("-") or not arg.startswith((".", "/")):
            continue
        path, _, rest = arg.partition("[")
        if not (ROOT / path).exists():
            faults.append(f"no path {path}")
        if path == "." and rest:
            faults += [f"no extra {extra!r}" for extra in rest.rstrip("]").split(",") if extra not in extras]
    return faults


def check_docker(args: list[str]) -> list[str]:
    """``docker exec C filejobs ...``, and ``docker compose run SERVICE ARGS`` (the image's entry point is
    filejobs)."""
    rest = [arg for arg in args if not arg.startswith("-")]
    if rest[:1] == ["exec"] and rest[2:3] == ["filejobs"]:
        return check_filejobs(rest[3:])
    if rest[:2] == ["compose", "run"] and len(rest) > 3:
        return check_filejobs(rest[3:])
    return []


CHECKS = {
    "filejobs": check_filejobs,
    "python": check_python,
    "python3": check_python,
    "pytest": check_pytest,
    "pip": check_pip,
    "docker": check_docker,
}


def faults_of(command: Command) -> list[str]:
    check = CHECKS.get(command.argv[0])
    return check(list(command.argv[1:])) if check else []


def test_every_shell_command_of_the_docs_exists() -> None:
    commands = all_commands()
    assert sum(c.argv[0] == "filejobs" for c in commands) >= 10  # the parser found the blocks
    faults = [f"{command}: {fault}" for command in commands for fault in faults_of(command)]
    assert not faults, "\n".join(faults)


@pytest.mark.parametrize(
    ("block", "fault"),
    [
        ("```sh\nfilejobs serv\n```", "no command 'filejobs serv'"),
        ("```sh\nfilejobs submit a/ --proccessor thumbnail\n```", "has no option '--proccessor'"),
        ("```bash\nFILEJOBS_X=1 filejobs keys create me --force  # why\n```", "has no option '--force'"),
        ("```sh\nfilejobs submit a/ \\\n    --nope 3\n```", "has no option '--nope'"),
        ("```console\n$ filejobs wait 1 --timout 5\noutput --not-an-option\n```", "has no option '--timout'"),
        ("```sh\ncd x && python -m scripts.nothing_here\n```", "no module scripts.nothing_here"),
        ("```sh\npytest tests/test_nothing_here.py\n```", "no path tests/test_nothing_here.py"),
        ("```sh\npytest tests/test_docs_commands.py::test_nothing_here\n```", "no test"),
        ('```sh\npip install -e ".[nothing]"\n```', "no extra 'nothing'"),
        ("```sh\ndocker compose run --rm api keys make me\n```", "no command 'filejobs keys make'"),
    ],
)
def test_the_check_finds(block: str, fault: str) -> None:
    found = [f for command in commands_of(ROOT / "README.md", block) for f in faults_of(command)]
    assert any(fault in f for f in found), found


def test_the_check_passes_real_commands() -> None:
    block = (
        "```sh\nfilejobs --help\nfilejobs keys\nfilejobs result 1 -o - --json\n"
        "python -m scripts.bench --smoke\npytest tests/cli -k submit\nls | grep x\n```\n"
        "```python\nfilejobs nothing --at-all\n```"
    )
    assert [f for command in commands_of(ROOT / "README.md", block) for f in faults_of(command)] == []


HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    found, fenced = set(), False
    for line in page.read_text().split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(2).lower())
            found.add(text.replace(" ", "-"))
    return found


def test_every_link_of_the_docs_leads_somewhere() -> None:
    faults = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                faults.append(f"{page.relative_to(ROOT)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                faults.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert not faults, "\n".join(faults)


def test_the_layout_names_every_module_and_no_other() -> None:
    """docs/architecture.md's Layout lists each module of the package (by file name), and no module
    that is gone."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    layout = text[text.index("## Layout") :]
    package = ROOT / "service" / "filejobs"
    modules = {p.name for p in package.rglob("*.py") if p.name != "__init__.py"}
    folders = {
        f"{p.relative_to(package).as_posix()}/"
        for p in package.rglob("*")
        if p.is_dir() and p.name != "__pycache__"
    }
    named = set(re.findall(r"\b\w+\.py\b", layout)) - {"__init__.py"}
    assert not modules - named, f"modules the Layout does not list: {sorted(modules - named)}"
    assert not named - modules, f"modules the Layout lists that do not exist: {sorted(named - modules)}"
    leaves = {folder.split("/")[-2] + "/" for folder in folders}
    assert all(leaf in layout for leaf in leaves), sorted(leaf for leaf in leaves if leaf not in layout)
