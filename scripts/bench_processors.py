"""Processor speed against baselines run in the same invocation.

* ``inspect`` on an N MiB file of random bytes, next to ``sha256sum`` of the same file;
* ``csv-profile`` on an N MiB generated CSV, next to ``sha256sum`` of it and to a bare
  ``csv.reader`` pass over it (the floor for any profiler built on Python's csv module).

Both processors run as the service runs them: in a warm worker child process
(``filejobs.jobs.executor.ChildProcess``). The files are read once first so every contender reads
from the page cache; rounds alternate contenders, and the table shows medians and ratios
(> 1 means faster than the baseline).

    python -m scripts.bench_processors --size-mib 1024 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from filejobs.jobs.executor import ChildProcess, Control
from filejobs.jobs.messages import RunRequest

MiB = 1024 * 1024


def make_random_file(path: Path, size_mib: int) -> None:
    block = random.Random(1).randbytes(MiB)
    with open(path, "wb") as out:
        for _ in range(size_mib):
            out.write(block)


def make_csv(path: Path, size_mib: int) -> int:
    """A CSV with an int, a float, a bool, a date, a datetime and two string columns."""
    rng = random.Random(2)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta, with a comma", 'say "hi"']
    rows = []
    for i in range(20_000):
        rows.append(
            f"{i},{rng.uniform(-1e6, 1e6):.3f},{rng.choice(['true', 'false'])},"
            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
            f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00,"
            f'"{rng.choice(words).replace(chr(34), chr(34) * 2)}",user{rng.randint(1, 50_000)}\n'
        )
    chunk = "".join(rows).encode()
    target = size_mib * MiB
    written = 0
    with open(path, "wb") as out:
        out.write(b"id,amount,flag,day,moment,label,user\n")
        while written < target:
            out.write(chunk)
            written += len(chunk)
    return written


def warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(16 * MiB):
            pass


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def sha256sum(path: Path) -> None:
    subprocess.run(["sha256sum", str(path)], check=True, stdout=subprocess.DEVNULL)


def csv_reader_pass(path: Path) -> None:
    with open(path, newline="", encoding="utf-8") as handle:
        for _row in csv.reader(handle):
            pass


def run_processor(
    child: ChildProcess, spec: str, path: Path, out: Path, content_type: str
) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    outcome = child.run(
        RunRequest(spec, str(path), str(out), file_name=path.name, content_type=content_type),
        tick=lambda progress, message: Control.CONTINUE,
        timeout=3600,
        cancel_grace=1,
    )
    if outcome.kind != "done":
        raise SystemExit(f"{spec} did not succeed: {outcome.kind} {outcome.reply}")
    return outcome.done.result


def time_processor(
    child: ChildProcess, spec: str, path: Path, out: Path, content_type: str
) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    result = run_processor(child, spec, path, out, content_type)
    return time.perf_counter() - started, result


def report(
    title: str, size: int, contenders: dict[str, list[float]], baselines: list[str], subject: str
) -> None:
    print(f"\n{title} ({size / MiB:.0f} MiB, {len(contenders[subject])} rounds; medians)")
    print(f"  {'contender':<22} {'seconds':>8} {'MB/s':>8}")
    medians = {name: statistics.median(times) for name, times in contenders.items()}
    for name, seconds in medians.items():
        print(f"  {name:<22} {seconds:>8.2f} {size / seconds / 1e6:>8.0f}")
    for base in baselines:
        print(f"  ratio {subject} / {base}: {medians[base] / medians[subject]:.2f}x (speed)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="size of each test file (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per contender (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    parser.add_argument("--skip-csv", action="store_true", help="only the inspect comparison")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="filejobs-bench-", dir=args.dir))
    child = ChildProcess()
    child.start()
    try:
        blob = work / "random.bin"
        make_random_file(blob, args.size_mib)
        warm(blob)
        inspect_times: dict[str, list[float]] = {"sha256sum": [], "inspect": []}
        for round_ in range(args.rounds):
            inspect_times["sha256sum"].append(timed(lambda: sha256sum(blob)))
            seconds, result = time_processor(child, "filejobs.processors.inspect:Inspect", blob,
                                             work / f"out-i{round_}", "application/octet-stream")  # fmt: skip
            inspect_times["inspect"].append(seconds)
            assert result.get("size") == blob.stat().st_size
        report("inspect vs sha256sum", blob.stat().st_size, inspect_times, ["sha256sum"], "inspect")
        blob.unlink()

        if not args.skip_csv:
            table = work / "data.csv"
            size = make_csv(table, args.size_mib)
            warm(table)
            csv_times: dict[str, list[float]] = {"sha256sum": [], "csv.reader pass": [], "csv-profile": []}
            for round_ in range(args.rounds):
                csv_times["sha256sum"].append(timed(lambda: sha256sum(table)))
                csv_times["csv.reader pass"].append(timed(lambda: csv_reader_pass(table)))
                seconds, profile = time_processor(child, "filejobs.processors.csv_profile:CsvProfile", table,
                                                  work / f"out-c{round_}", "text/csv")  # fmt: skip
                csv_times["csv-profile"].append(seconds)
            print(f"\ncsv-profile saw {profile.get('row_count')} rows")
            report("csv-profile", size, csv_times, ["sha256sum", "csv.reader pass"], "csv-profile")
    finally:
        child.kill()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
