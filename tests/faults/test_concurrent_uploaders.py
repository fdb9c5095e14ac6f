"""50 concurrent uploaders on SQLite for a minute: no "database is locked", no 5xx, no job lost.

A real ``filejobs serve`` with its default settings (SQLite in WAL mode, the local backend) and
``FILEJOBS_WORKERS=2``, so two workers claim, run (``inspect``), renew leases and finish jobs,
writing to the database while the uploads insert rows. 50 uploader threads (see
:mod:`tests.faults.soak`) upload 1-64 KiB files for :data:`SOAK_SECONDS` and now and then read a
job or the list. Then every job answered 202 must exist and reach ``succeeded``.

``FILEJOBS_SOAK_SECONDS`` overrides the duration (CI uses the default, 60 s); it is read at import,
before the suite's autouse fixture clears ``FILEJOBS_*`` from the environment. For longer or
heavier runs, against any server, use ``scripts/soak_uploads.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filejobs.testing import Server
from filejobs.testing.soak import SoakConfig, drain, locked_lines, run_uploaders, server_upload_quantiles

pytestmark = [pytest.mark.soak, pytest.mark.e2e]

SOAK_SECONDS = float(os.environ.get("FILEJOBS_SOAK_SECONDS", "60"))
UPLOADERS = 50
#: How long the two workers get to finish the backlog once the uploaders stop. They run about
#: half as many jobs per second as 50 uploaders submit, so the backlog takes about as long again.
DRAIN_WITHIN = max(150.0, 2.5 * SOAK_SECONDS)


@pytest.mark.timeout(SOAK_SECONDS + DRAIN_WITHIN + 120)
def test_50_concurrent_uploaders_on_sqlite_never_see_a_locked_database(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", env={"FILEJOBS_WORKERS": "2"}, log_path=tmp_path / "server.log")
    with server:
        totals = run_uploaders(SoakConfig(server.base_url, uploaders=UPLOADERS, seconds=SOAK_SECONDS))
        print(f"\n----- {UPLOADERS} uploaders, {SOAK_SECONDS:g} s, SQLite, 2 workers -----")
        print(totals.report())
        quantiles = server_upload_quantiles(server.base_url)
        if quantiles:
            print(
                "server side (body start to row recorded): "
                + ", ".join(f"p{q * 100:g} <= {bound:g} s" for q, bound in quantiles.items())
            )
        drained = drain(server.base_url, totals.accepted, timeout=DRAIN_WITHIN)
        print(
            f"backlog of {drained.backlog} jobs drained in {drained.seconds:.1f} s "
            f"({drained.backlog / max(drained.seconds, 1e-9):.1f} jobs/s): {dict(drained.statuses)}"
        )
        assert server.returncode is None, "the server died"
        log = server.log_text()
    # What the server said besides its access log (pytest shows it when the test failed).
    notes = [line for line in log.splitlines() if line and not line.startswith("INFO:     127.0.0.1:")]
    print("----- server log without access lines (tail) -----\n" + "\n".join(notes[-20:]))

    locked = locked_lines(log)
    assert locked == [], locked[:10]
    assert totals.locked == [], totals.locked[:10]
    assert totals.five_xx == 0, totals.server_errors[:10]
    assert totals.transport_errors == [], totals.transport_errors[:10]
    assert totals.unexpected == [], totals.unexpected[:10]
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 2000) :][:6000]
    assert len(totals.accepted) >= UPLOADERS, "hardly anything was uploaded"
    assert len(set(totals.accepted)) == len(totals.accepted)
    assert drained.missing == [], f"{len(drained.missing)} accepted jobs are gone: {drained.missing[:5]}"
    assert drained.not_succeeded == [], drained.not_succeeded[:10]
    assert drained.statuses["succeeded"] == len(totals.accepted)
