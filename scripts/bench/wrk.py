"""``wrk`` as the suite's load generator: one request (a GET of a path, or a POST of a fixed body)
sent over and over on N keep-alive connections for a fixed time.

wrk is C, so the server under test, not the client, is the bottleneck. A generated Lua script sets
the request, counts every response that is not a 2xx in each wrk thread (``response()``), and
prints wrk's own figures (requests, duration, latency percentiles, socket errors) as machine
readable lines from ``done()``; ``--latency`` is passed too, so wrk's text report is in the output
for a human. Any non-2xx answer, socket error or timeout fails the run loudly (:class:`WrkFailed`):
a fast error is not a result.

Use the same :func:`run_wrk` arguments for filejobs and its baseline (``-t1`` by default: on 2
cores, one for wrk and one for the server).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Latency percentiles reported (wrk's own histogram, microsecond resolution).
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MARK = "FJWRK"

LUA = r"""
local body_path = %(body_path)s
wrk.method = %(method)s
%(headers)s
if body_path ~= nil then
  local f = assert(io.open(body_path, "rb"))
  wrk.body = f:read("*a")
  f:close()
end

local unique_at = %(unique_at)s
if unique_at ~= nil then
  -- every request's body differs: a tag (the run's nonce, the thread, a counter) overwrites the
  -- bytes from unique_at on (the start of the file's content: every upload is new content)
  local counter = 0
  local head = string.sub(wrk.body, 1, unique_at)
  local rest = string.sub(wrk.body, unique_at + 1)
  function request()
    counter = counter + 1
    local tag = %(nonce)s .. "-" .. tostring(thread_id or 0) .. "-" .. counter .. "-"
    return wrk.format(nil, nil, nil, head .. tag .. string.sub(rest, #tag + 1))
  end
end

local threads = {}
local started = 0

function setup(thread)
  started = started + 1
  thread:set("thread_id", started)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  bad = 0
  first_bad = 0
end

function response(status, headers, body)
  if status >= 200 and status <= 299 then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == 0 then first_bad = status end
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, first = 0, 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    bad_total = bad_total + t:get("bad")
    if first == 0 then first = t:get("first_bad") end
  end
  local function out(key, value) io.write(string.format("%(mark)s %%s %%.3f\n", key, value)) end
  out("requests", summary.requests)
  out("duration_us", summary.duration)
  out("ok", ok_total)
  out("bad", bad_total)
  out("first_bad", first)
  for key, value in pairs(summary.errors) do out("error_" .. key, value) end
  for _, p in ipairs({%(percentiles)s}) do out("p" .. p, latency:percentile(p)) end
  out("mean_us", latency.mean)
  out("max_us", latency.max)
end
"""


class WrkFailed(RuntimeError):
    """wrk could not run, or some request failed or was answered with a non-2xx status."""


@dataclass
class WrkResult:
    """What one wrk run measured."""

    requests: int  # completed responses
    seconds: float  # wrk's own run duration
    ok: int  # 2xx responses
    latency_ms: dict[float, float] = field(default_factory=dict)  # percentile -> ms
    mean_ms: float = 0.0
    max_ms: float = 0.0
    output: str = ""  # wrk's text report

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        """Median latency."""
        return self.latency_ms[50.0]

    @property
    def p99_ms(self) -> float:
        """99th percentile latency."""
        return self.latency_ms[99.0]


def wrk_binary() -> str:
    """The wrk executable on PATH, or WrkFailed saying how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise WrkFailed("wrk is not installed (apt-get install -y wrk)")
    return found


def _lua_string(value: str) -> str:
    """``value`` as a Lua long-bracket string literal (no escapes to get wrong)."""
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    eq = "=" * level
    return f"[{eq}[{value}]{eq}]"


def lua_script(
    method: str, headers: Mapping[str, str], body_path: Path | None, unique_at: int | None = None
) -> str:
    """The Lua script for one request shape (see the module docstring); ``unique_at``: a tag
    unique to each request overwrites the body from that offset on (the same length)."""
    header_lines = "\n".join(
        f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items()
    )
    return LUA % {
        "body_path": _lua_string(str(body_path)) if body_path else "nil",
        "method": _lua_string(method),
        "headers": header_lines,
        "mark": MARK,
        "percentiles": ", ".join(f"{p:g}" for p in PERCENTILES),
        "unique_at": "nil" if unique_at is None else str(unique_at),
        "nonce": _lua_string(secrets.token_hex(8)),
    }


def parse(output: str) -> dict[str, float]:
    """The ``FJWRK key value`` lines ``done()`` printed."""
    values: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == MARK:
            values[parts[1]] = float(parts[2])
    return values


def run_wrk(
    url: str,
    *,
    seconds: int,
    connections: int = 16,
    threads: int = 1,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: int = 10,
    unique_at: int | None = None,
) -> WrkResult:
    """Run ``wrk --latency -t<threads> -c<connections> -d<seconds>s`` against ``url`` sending
    ``method`` with ``body`` (Content-Length is set by wrk; with ``unique_at``, each request's
    body differs from that offset on: see :func:`lua_script`); raise :class:`WrkFailed` unless every
    completed request got a 2xx and no socket error or timeout happened."""
    with tempfile.TemporaryDirectory(prefix="fj-wrk-") as tmp:
        body_path = None
        if body is not None:
            body_path = Path(tmp) / "body.bin"
            body_path.write_bytes(body)
        script = Path(tmp) / "bench.lua"
        script.write_text(lua_script(method, headers or {}, body_path, unique_at))
        command = [
            wrk_binary(),
            *(f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s"),
            *("--latency", "-s", str(script), url),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    output = done.stdout + done.stderr
    values = parse(done.stdout)
    if done.returncode != 0 or "requests" not in values:
        raise WrkFailed(f"wrk failed ({done.returncode}):\n{output}")
    errors = {k.removeprefix("error_"): int(v) for k, v in values.items() if k.startswith("error_") and v}
    bad = int(values["bad"])
    if bad or errors:
        first = int(values["first_bad"])
        raise WrkFailed(
            f"{method} {url}: {bad} non-2xx response(s) (first: {first or '-'}), "
            f"socket errors {errors or '-'} "
            f"out of {int(values['requests'])} requests:\n{output}"
        )
    if values["requests"] < 1 or values["ok"] < 1:
        raise WrkFailed(f"{method} {url}: no request completed:\n{output}")
    return WrkResult(
        requests=int(values["requests"]),
        seconds=values["duration_us"] / 1e6,
        ok=int(values["ok"]),
        latency_ms={p: values[f"p{p:g}"] / 1000 for p in PERCENTILES},
        mean_ms=values["mean_us"] / 1000,
        max_ms=values["max_us"] / 1000,
        output=output,
    )
