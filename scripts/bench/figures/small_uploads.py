"""1 KiB uploads per second at 16 connections: filejobs' accept path against the tutorial.

wrk POSTs the same 1 KiB multipart body over 16 keep-alive connections for a fixed time, to
filejobs (``FILEJOBS_WORKERS=0``: only the accept path runs, no job is processed), to the
tutorial app and to the tutorial made durable, in turn each round (the order rotating); the
medians of requests/s are compared. filejobs fsyncs the file and commits the row (SQLite WAL,
synchronous=FULL) before every 202; the tutorial fsyncs nothing and keeps its jobs in a dict; the
durable tutorial (``tutorial-durable``, the same app) fsyncs its file and then its directory before
answering, so the two tutorials side by side show what the durability of the bytes alone costs on
this disk. After each filejobs run the rows are counted in its database: there must be at least one
per 202 wrk saw.

Two figures: the same body every time (as wrk sends it: after the first, filejobs stores nothing new,
the key holds that content), and every body new (a tag unique to each request overwrites the file's
first bytes: each upload is content never seen, written and fsynced).
"""

from __future__ import annotations

from scripts.bench.common import UPLOAD_PATH, AppName, Context, UvicornApp, filejobs_server
from scripts.bench.figures.filejobs_load import count_jobs, filejobs_env, median, small_body
from scripts.bench.report import Figure
from scripts.bench.wrk import WrkResult, run_wrk

CONNECTIONS = 16
NAMES: tuple[AppName, ...] = ("filejobs", "tutorial", "tutorial-durable")


def post_small(base_url: str, path: str, seconds: int, *, new: bool = False) -> WrkResult:
    """wrk -c16 POSTs of the 1 KiB file to ``base_url + path`` for ``seconds``; ``new``: each
    request's file content differs (its first bytes are a tag unique to the request)."""
    body = small_body(1024)
    return run_wrk(
        base_url + path,
        seconds=seconds,
        connections=CONNECTIONS,
        method="POST",
        body=body.whole(),
        headers={"Content-Type": body.content_type},
        unique_at=len(body.preamble) if new else None,
    )


def run(ctx: Context) -> list[Figure]:
    """Alternate wrk runs against filejobs and the tutorial; median uploads/s and p99 of each."""
    seconds = 2 if ctx.smoke else 10
    root = ctx.subdir("small")
    results: dict[str, list[WrkResult]] = {name: [] for name in NAMES}
    fresh: dict[str, list[WrkResult]] = {name: [] for name in NAMES}
    data_dir = root / "filejobs"
    server = filejobs_server(data_dir, filejobs_env(FILEJOBS_WORKERS="0"), scalable=True)
    tutorial = UvicornApp("tutorial", root / "tutorial")
    durable = UvicornApp("tutorial-durable", root / "tutorial-durable")
    with server, tutorial, durable:
        bases = {
            "filejobs": server.base_url,
            "tutorial": tutorial.base_url,
            "tutorial-durable": durable.base_url,
        }
        for name in NAMES:  # warm up: imports, connection pools, the page cache
            post_small(bases[name], UPLOAD_PATH[name], 1)
        for round_no in range(ctx.rounds):
            shift = round_no % len(NAMES)
            order = NAMES[shift:] + NAMES[:shift]
            for new, into in ((False, results), (True, fresh)):
                for name in order:
                    before = count_jobs(data_dir) if name == "filejobs" else 0
                    got = post_small(bases[name], UPLOAD_PATH[name], seconds, new=new)
                    if name == "filejobs":
                        _check_rows(count_jobs(data_dir) - before, got)
                    into[name].append(got)
                    kind = "  (every body new)" if new else ""
                    rate = f"{got.rps:8.0f} uploads/s  p99 {got.p99_ms:6.1f} ms"
                    ctx.say(f"   round {round_no + 1} {name:16s} {rate}{kind}")
    return [_figure(ctx, results), _figure(ctx, fresh, new=True)]


def _check_rows(rows: int, got: WrkResult) -> None:
    """Every 202 wrk counted must have its row (a request in flight when wrk stopped may add one)."""
    if rows < got.ok:
        raise RuntimeError(f"filejobs answered {got.ok} x 202 but only {rows} rows were committed")


def _figure(ctx: Context, results: dict[str, list[WrkResult]], *, new: bool = False) -> Figure:
    """The figure: median uploads/s of filejobs against the tutorial's (the target) and the durable
    tutorial's, p99s in the note."""
    fj = median(r.rps for r in results["filejobs"])
    tut = median(r.rps for r in results["tutorial"])
    dur = median(r.rps for r in results["tutorial-durable"])
    fj_p99 = median(r.p99_ms for r in results["filejobs"])
    tut_p99 = median(r.p99_ms for r in results["tutorial"])
    dur_p99 = median(r.p99_ms for r in results["tutorial-durable"])
    return Figure(
        key="small_upload_1kib_new_rps" if new else "small_upload_1kib_rps",
        label="1 KiB uploads/s, 16 connections" + (", every body new" if new else ""),
        unit="req/s",
        value=fj,
        baselines={"tutorial": tut, "tutorial-durable": dur},
        target=">= 1.0x tutorial, every 202 durable",
        met=None if ctx.smoke else fj >= tut,
        note=(
            f"wrk -t1 -c{CONNECTIONS}; filejobs with WORKERS=0 (accept path only) fsyncs the file and "
            f"commits the row (WAL, synchronous=FULL) before each 202, the tutorial fsyncs nothing, "
            f"tutorial-durable fsyncs its file and directory; p99 filejobs {fj_p99:.1f} ms, "
            f"tutorial {tut_p99:.1f} ms, tutorial-durable {dur_p99:.1f} ms; "
            + ("every request's file is new content" if new else "the same body every time")
        ),
    )
