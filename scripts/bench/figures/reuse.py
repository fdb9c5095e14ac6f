"""Never the same upload or run twice (issue 19): a batch run again, a batch with one file in ten
changed, and what deduplication costs an upload.

Batch: one ``filejobs serve`` (local backend, its worker processes); a folder of mixed files
(PNG images of noise, CSVs, small PDFs; 1,000 files of about 200 KiB, about 200 MiB, in full; 24
tiny ones in smoke mode) submitted with ``filejobs submit --wait`` (a subprocess, as a user runs
it), then the identical command again, then again after one file in ten was changed. Bytes
uploaded are the CLI's own count (its summary); wall time is the command's.

Upload cost: two ``filejobs serve`` with ``WORKERS=0`` (the accept path only), ``FILEJOBS_REUSE``
true and false; wrk POSTs a 1 KiB file to each for a fixed time, alternately, with content unique
to every request (a tag of the run, the thread and a counter overwrites the file's first bytes:
:func:`scripts.bench.wrk.lua_script`), so every upload is a first-time upload, never a duplicate;
then 1 GiB uploads (a fresh random block each: first-time content too), one to each server per
round, MB/s from the first byte sent to the 202.
"""

from __future__ import annotations

import io
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from scripts.bench.common import UPLOAD_PATH, Context, MiB, filejobs_server
from scripts.bench.figures import upload
from scripts.bench.figures.filejobs_load import filejobs_env, median, small_body
from scripts.bench.figures.small_uploads import CONNECTIONS
from scripts.bench.report import Figure
from scripts.bench.wrk import WrkResult, run_wrk

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_UPLOADED = re.compile(r"· ([\d.]+) (B|KiB|MiB|GiB|TiB) uploaded in")


def _png(rng: random.Random, size: int) -> bytes:
    side = max(8, int((size / 3) ** 0.5))
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _csv(rng: random.Random, size: int) -> bytes:
    rows = ["id,name,value,when"]
    written = len(rows[0]) + 1
    while written < size:
        rows.append(
            f"{len(rows)},item-{rng.randrange(10**6)},{rng.random():.6f},2026-12-{rng.randint(1, 28):02d}"
        )
        written += len(rows[-1]) + 1
    return ("\n".join(rows) + "\n").encode()


def _pdf(rng: random.Random, size: int) -> bytes:
    """A small valid PDF: one page whose content stream is padded with comments to ``size``."""
    text = f"BT /F1 12 Tf 72 720 Td (scan {rng.randrange(10**9)}) Tj ET\n"
    text += "".join(f"% {rng.randbytes(30).hex()}\n" for _ in range(max(0, size - 600) // 63))
    stream = text.encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_folder(root: Path, files: int, size: int, seed: int = 19) -> Path:
    rng = random.Random(seed)
    makers = (("png", _png), ("csv", _csv), ("pdf", _pdf))
    root.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        ext, make = makers[index % 3]
        (root / f"{index // 100:02d}").mkdir(exist_ok=True)
        (root / f"{index // 100:02d}" / f"f{index:05d}.{ext}").write_bytes(make(rng, size))
    return root


def change_one_in_ten(root: Path) -> int:
    """Append a line to every tenth file (the files stay valid enough to inspect); their bytes."""
    changed = 0
    for index, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
        if index % 10 == 0:
            with open(path, "ab") as handle:
                handle.write(b"\n% changed\n")
            changed += path.stat().st_size
    return changed


def submit_folder(base_url: str, folder: Path) -> tuple[float, float, str]:
    """``filejobs submit FOLDER --wait``: wall seconds, bytes uploaded (its summary), the summary."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "filejobs.cli", "submit", str(folder), "--server", base_url, "--wait"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"} | _python_env(),
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"filejobs submit failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    summary = next((line for line in done.stdout.splitlines() if " uploaded in " in line), "")
    match = _UPLOADED.search(summary)
    if match is None:
        raise RuntimeError(f"no summary in: {done.stdout[-2000:]}")
    return wall, float(match[1]) * _UNITS[match[2]], summary.strip()


def post_first_time(base_url: str, seconds: int) -> WrkResult:
    """wrk -c16 POSTs of a 1 KiB file whose content differs in every request, for ``seconds``."""
    body = small_body(1024)
    return run_wrk(
        base_url + UPLOAD_PATH["filejobs"],
        seconds=seconds,
        connections=CONNECTIONS,
        method="POST",
        body=body.whole(),
        headers={"Content-Type": body.content_type},
        unique_at=len(body.preamble),
    )


def big_upload_mbps(base_url: str, size_mib: int) -> float:
    """One upload of ``size_mib`` MiB of fresh random content (never stored before): MB/s from the
    first byte sent to the 202 (checked: size and SHA-256); the job is deleted after."""
    payload = upload.Payload.of(size_mib)
    target = upload.Target("filejobs", base_url, 0)
    upload.settle()
    with httpx.Client(base_url=base_url, timeout=upload.TIMEOUT) as client:
        sent = upload.send(client, target, payload)
        upload.clean_up(client, target, [sent])
    return sent.mbps


def _python_env() -> dict[str, str]:
    import os

    return {
        name: value for name, value in os.environ.items() if name in ("PYTHONPATH", "VIRTUAL_ENV", "HOME")
    }


def run(ctx: Context) -> list[Figure]:
    files, size = (24, 4096) if ctx.smoke else (1000, 200 * 1024)
    seconds = 1 if ctx.smoke else 10
    root = ctx.subdir("reuse")
    folder = make_folder(root / "folder", files, size)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    ctx.say(f"   {files} files, {total / 2**20:.1f} MiB")
    with filejobs_server(root / "batch", filejobs_env(FILEJOBS_REUSE="true")) as server:
        first_wall, first_bytes, line = submit_folder(server.base_url, folder)
        ctx.say(f"   first run   {first_wall:7.2f} s  {line} ({first_bytes / 2**20:.1f} MiB sent)")
        again_wall, again_bytes, line = submit_folder(server.base_url, folder)
        ctx.say(f"   again       {again_wall:7.2f} s  {line}")
        changed = change_one_in_ten(folder)
        tenth_wall, tenth_bytes, line = submit_folder(server.base_url, folder)
        ctx.say(f"   1 in 10 new {tenth_wall:7.2f} s  {line} (changed files: {changed / 2**20:.2f} MiB)")

    big_mib = upload.SMOKE_SIZE_MIB if ctx.smoke else upload.SIZE_MIB
    upload.check_free_disk(ctx, 2 * big_mib * MiB)
    results: dict[str, list[WrkResult]] = {"reuse on": [], "reuse off": []}
    big: dict[str, list[float]] = {"reuse on": [], "reuse off": []}
    room = {"FILEJOBS_MAX_UPLOAD_BYTES": str((big_mib + 1) * MiB), "FILEJOBS_MIN_FREE_DISK": "0"}
    with (
        filejobs_server(
            root / "on", filejobs_env(FILEJOBS_WORKERS="0", FILEJOBS_REUSE="true", **room), scalable=True
        ) as on,
        filejobs_server(
            root / "off", filejobs_env(FILEJOBS_WORKERS="0", FILEJOBS_REUSE="false", **room), scalable=True
        ) as off,
    ):
        bases = {"reuse on": on.base_url, "reuse off": off.base_url}
        for base in bases.values():
            post_first_time(base, 1)  # warm up
        for round_no in range(ctx.rounds):
            for name in list(bases) if round_no % 2 == 0 else list(bases)[::-1]:
                got = post_first_time(bases[name], seconds)
                results[name].append(got)
                ctx.say(f"   round {round_no + 1} {name:9s} {got.rps:8.0f} first-time 1 KiB uploads/s")
        for round_no in range(ctx.rounds):
            for name in list(bases) if round_no % 2 == 0 else list(bases)[::-1]:
                mbps = big_upload_mbps(bases[name], big_mib)
                big[name].append(mbps)
                ctx.say(f"   round {round_no + 1} {name:9s} {mbps:8.1f} MB/s ({upload.size_label(big_mib)})")
    with_reuse = median(r.rps for r in results["reuse on"])
    without = median(r.rps for r in results["reuse off"])
    big_on, big_off = median(big["reuse on"]), median(big["reuse off"])
    judged = not ctx.smoke
    return [
        Figure(
            key="reuse_rerun_wall_ratio",
            label="identical batch again: wall time / first run",
            unit="x",
            value=again_wall / first_wall,
            target="<= 0.1x, 0 bytes uploaded",
            met=(again_wall / first_wall <= 0.1 and again_bytes == 0) if judged else None,
            note=f"{files} files, {total / 2**20:.0f} MiB, filejobs submit --wait; first {first_wall:.1f} s, "
            f"again {again_wall:.2f} s, {again_bytes:.0f} B uploaded",
        ),
        Figure(
            key="reuse_tenth_changed_wall_ratio",
            label="one file in ten changed: wall time / first run",
            unit="x",
            value=tenth_wall / first_wall,
            target="<= 0.2x, bytes = the changed files",
            met=(tenth_wall / first_wall <= 0.2 and tenth_bytes <= changed * 1.01) if judged else None,
            note=f"{tenth_bytes / 2**20:.2f} MiB uploaded, changed files {changed / 2**20:.2f} MiB",
        ),
        Figure(
            key="reuse_upload_cost_ratio",
            label="first-time 1 KiB uploads/s, reuse on vs off",
            unit="x",
            value=with_reuse / without if without else 0.0,
            target=">= 0.95x",
            met=(with_reuse / without >= 0.95) if judged and without else None,
            note=f"wrk -c16, WORKERS=0, content unique to every request; "
            f"{with_reuse:.0f} uploads/s on, {without:.0f} off",
        ),
        Figure(
            key="reuse_big_upload_cost_ratio",
            label=f"first-time {upload.size_label(big_mib)} upload MB/s, reuse on vs off",
            unit="x",
            value=big_on / big_off if big_off else 0.0,
            target=">= 0.95x",
            met=(big_on / big_off >= 0.95) if judged and big_off else None,
            note=f"fresh random content each; {big_on:.0f} MB/s on, {big_off:.0f} off",
        ),
    ]
