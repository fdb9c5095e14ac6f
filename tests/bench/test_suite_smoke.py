"""The benchmark suite in smoke mode: ``python -m scripts.bench --smoke --json out.json`` from the
repository root, as a developer would run it, must finish cleanly with sane figures from every group.

It measures nothing (smoke sizes are far too small) and asserts no timings: it proves that every
group still starts its servers, drives them and reports figures. It needs ``wrk`` on PATH and
PostgreSQL, Redis and RabbitMQ on 127.0.0.1 (the celery group); without them it skips, or fails
under ``FILEJOBS_REQUIRE_SERVICES=1`` (CI, whose ``.ci/run`` installs wrk).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from filejobs.testing import kill_everything
from scripts.bench.__main__ import GROUPS
from tests.services import require_binary, require_port

pytestmark = [pytest.mark.e2e, pytest.mark.scaleout]

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 600.0
#: The runner's line on stderr after each group: ``   <group>: <n> figure(s) in <s> s``.
GROUP_DONE = re.compile(r"^\s+(\w+): (\d+) figure\(s\) in (\d+) s$", re.MULTILINE)
MACHINE_KEYS = {"cpu", "cores", "memory_gib", "kernel", "python"}


def tail(path: Path, chars: int = 6000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:]


def run_suite(tmp_path: Path, out: Path) -> tuple[int, Path, Path]:
    """Run the smoke suite; (exit code, stdout file, stderr file). On timeout, interrupt it (so it
    stops its servers), then kill whatever it left, and fail."""
    stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with stdout.open("wb") as out_file, stderr.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.bench", "--smoke", "--json", str(out)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=RUN_TIMEOUT), stdout, stderr
        except subprocess.TimeoutExpired:
            seen: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                seen = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGINT)  # KeyboardInterrupt: the groups' cleanups run
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            kill_everything(proc, seen)
            pytest.fail(
                f"python -m scripts.bench --smoke did not finish within {RUN_TIMEOUT:g} s\n"
                f"----- stderr (tail) -----\n{tail(stderr)}"
            )


#: Figures that are differences of two readings: noise can make them 0 or negative.
DIFFERENCES = {"upload_rss_growth_mib", "event_streams_idle_cpu_pct", "event_stream_rss_kib"}


def bad_number(value: Any, *, signed: bool = False) -> bool:
    """Anything but a finite number > 0 (any finite number when ``signed``; a bool is not a
    number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    return not math.isfinite(value) or (value <= 0 and not signed)


@pytest.mark.timeout(RUN_TIMEOUT + 120)
def test_smoke_suite_runs_every_group(tmp_path: Path) -> None:
    require_binary("wrk")
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379), ("RabbitMQ", 5672)):
        require_port(name, "127.0.0.1", port)

    out = tmp_path / "out.json"
    code, stdout, stderr = run_suite(tmp_path, out)
    # pytest shows these for a failed test: the table, and every group's progress and tracebacks.
    print(f"----- stdout -----\n{tail(stdout, 20000)}\n----- stderr -----\n{tail(stderr, 20000)}")

    assert code == 0, f"exit code {code}\n----- stderr (tail) -----\n{tail(stderr)}"
    assert out.exists(), "no JSON written"
    data = json.loads(out.read_text())
    assert data["failed"] == [], f"failed groups: {data['failed']}"
    assert data["smoke"] is True
    assert data["groups"] == list(GROUPS)

    counts = {name: int(n) for name, n, _seconds in GROUP_DONE.findall(stderr.read_text())}
    empty = [name for name in GROUPS if counts.get(name, 0) < 1]
    assert not empty, f"groups without figures: {empty} (figures per group: {counts})"
    assert sum(counts.values()) == len(data["figures"])

    machine = data["machine"]
    assert set(machine) >= MACHINE_KEYS, f"machine info lacks {MACHINE_KEYS - set(machine)}"
    for key in ("cpu", "kernel", "python"):
        assert machine[key], f"machine info: empty {key}"
    for key in ("cores", "memory_gib"):
        assert not bad_number(machine[key]), f"machine info: {key} = {machine[key]!r}"

    keys = [figure["key"] for figure in data["figures"]]
    assert len(keys) == len(set(keys)), f"figure keys repeat: {sorted(k for k in keys if keys.count(k) > 1)}"
    problems = []
    for figure in data["figures"]:
        key = figure["key"]
        for field in ("key", "label", "unit"):
            if not isinstance(figure.get(field), str) or not figure[field].strip():
                problems.append(f"{key}: empty {field}")
        if bad_number(figure["value"], signed=key in DIFFERENCES):
            problems.append(f"{key}: value {figure['value']!r}")
        for kind in ("baselines", "ratios"):
            for name, number in figure[kind].items():
                if bad_number(number):
                    problems.append(f"{key}: {kind[:-1]} {name} = {number!r}")
        if set(figure["ratios"]) != set(figure["baselines"]):
            ratios, baselines = sorted(figure["ratios"]), sorted(figure["baselines"])
            problems.append(f"{key}: ratios {ratios} != baselines {baselines}")
    assert not problems, "bad figures:\n" + "\n".join(problems)
