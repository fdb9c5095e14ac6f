#!/usr/bin/env python
"""Schemathesis against a running filejobs server: longer runs than the CI suite (tests/schema).

It fetches ``<url>/openapi.json`` and runs ``schemathesis run`` on it (its CLI, every phase:
examples, coverage, fuzzing, stateful with links inferred from ``Location`` headers) with every
check, positive and negative data, and the key(s) from a Web Fuzzing Commons auth file. The schema
declares the bearer key on every ``/v1`` operation, so ``ignored_auth`` resends requests without a
key and with a wrong one. Long polls (``?wait=`` up to 30 s) run at full length here.
With ``--second-api-key`` (another key of the same server), ``object_level_authorization`` replays
the first key's reads with the second: another key's job must be 404.

The schemathesis output streams as it runs; at the end comes a summary from its JSON report, which
stays in ``--report-dir`` with the schema and config used. Exit code: schemathesis' own (0: no
failure).

    filejobs serve &                                  # or any deployment you may test
    export FILEJOBS_API_KEY=$(filejobs keys create fuzz-a)
    python scripts/fuzz_api.py --url http://127.0.0.1:8000 --max-examples 200 \\
        --second-api-key "$(filejobs keys create fuzz-b)"

Uploads are real: each accepted one is a job (and a file) on that server, made with these keys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

#: Long polls (``?wait=``) last up to 30 s; a request may take that long legitimately.
REQUEST_TIMEOUT = 40


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(directory: Path, auth_file: Path | None, peers: list[str], args: argparse.Namespace) -> Path:
    lines = [
        "continue-on-failure = true",
        f"request-timeout = {REQUEST_TIMEOUT}",
        f"workers = {args.workers}",
        "",
        "[cache]",  # crash files for `schemathesis replay`, kept with the reports, not in the cwd
        f"directory = {toml_string(str(directory / 'cache'))}",
        "",
        "[generation]",
        'mode = "all"',
        f"max-examples = {args.max_examples}",
        'database = "none"',
        "",
        "[checks]",
        "enabled = true",
        "",
        "[phases.stateful.inference]",
        'algorithms = ["location-headers", "dependency-analysis"]',
    ]
    if auth_file is not None:
        lines += ["", "[auth.wfc]", f"path = {toml_string(str(auth_file))}"]
        if len(peers) > 1:
            lines.append(f"peers = [{', '.join(toml_string(p) for p in peers)}]")
    if args.seed is not None:
        lines.insert(0, f"seed = {args.seed}")
    if args.max_time is not None:
        lines.insert(0, f"max-time = {args.max_time}")
    config = directory / "schemathesis.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def summarize(report: dict[str, Any], seconds: float) -> str:
    cases = report.get("test_cases") or {}
    operations = report.get("operations") or {}
    lines = [
        "",
        f"== schemathesis {report.get('schemathesis_version')}: {seconds:.0f} s, seed {report.get('seed')},"
        f" stop: {report.get('stop_reason')}",
        f"   operations: {operations.get('tested')} tested of {operations.get('selected')}"
        f" ({operations.get('errored')} errored, {operations.get('skipped')} skipped)",
        f"   test cases: {cases.get('generated')} generated, {cases.get('with_failures')} with failures,"
        f" {cases.get('unique_failures')} unique failures, {cases.get('errored')} errored",
        "   phases: "
        + ", ".join(f"{name} {p['status']}" for name, p in (report.get("phases") or {}).items()),
    ]
    failures = report.get("failures") or []
    lines.append(f"   failures: {len(failures)} kinds" + (":" if failures else ""))
    for failure in failures:
        lines.append(
            f"     - {failure['title']} [{failure['type']}, {failure['severity']}] x{failure['count']}:"
            f" {', '.join(failure['operations'])}"
        )
    for error in report.get("errors") or []:
        lines.append(f"   error: {error['title']} x{error['count']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("FILEJOBS_API_KEY"),
        help="an API key of that server (default: $FILEJOBS_API_KEY); none for an open service",
    )
    parser.add_argument(
        "--second-api-key", help="another key: checks that it never sees the first key's jobs"
    )
    parser.add_argument("--max-examples", type=int, default=100, help="test cases per operation and phase")
    parser.add_argument("--seed", type=int, help="reproduce an earlier run (its seed is in the summary)")
    parser.add_argument("--max-time", type=int, help="a time budget in seconds (fuzzing repeats until spent)")
    parser.add_argument("--workers", type=int, default=1, help="concurrent schemathesis workers")
    parser.add_argument("--report-dir", type=Path, help="where reports go (default: a new temporary folder)")
    args = parser.parse_args()

    url = args.url.rstrip("/")
    try:
        response = httpx.get(f"{url}/openapi.json", timeout=30)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        print(f"fuzz_api: cannot fetch {url}/openapi.json: {exc}", file=sys.stderr)
        return 2
    schema = response.json()
    if not schema.get("components", {}).get("securitySchemes"):
        print("fuzz_api: the schema declares no security scheme: ignored_auth has nothing to check")

    directory = args.report_dir or Path(tempfile.mkdtemp(prefix="fuzz-api-"))
    directory.mkdir(parents=True, exist_ok=True)
    schema_file = directory / "openapi.json"
    schema_file.write_text(json.dumps(schema, indent=1))
    keys = {name: key for name, key in (("first", args.api_key), ("second", args.second_api_key)) if key}
    auth_file = None
    if keys:  # none: an open service, tested without credentials
        auth_file = directory / "auth.json"
        auth_file.touch(mode=0o600)
        auth_file.write_text(
            json.dumps(
                {
                    "auth": [
                        {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}]}
                        for name, key in keys.items()
                    ]
                }
            )
        )
    report_file = directory / "report.json"
    command = [sys.executable, "-m", "schemathesis.cli"]
    command += ["--config-file", str(write_config(directory, auth_file, list(keys), args)), "run"]
    command += [str(schema_file), "--url", url, "--report", "json", "--report-json-path", str(report_file)]
    print("fuzz_api:", " ".join(command), flush=True)

    started = time.monotonic()
    code = subprocess.call(command)
    seconds = time.monotonic() - started
    if report_file.is_file():
        print(summarize(json.loads(report_file.read_text()), seconds))
    print(f"   reports, schema and config: {directory}")
    return code


if __name__ == "__main__":
    sys.exit(main())
