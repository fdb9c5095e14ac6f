#!/usr/bin/env python
"""What the ``thumbnail`` processor costs in memory, measured in a real worker child.

    python scripts/image_memory.py                      # the hostile pair, at the default 1 GiB limit
    python scripts/image_memory.py --limit 0            # no limit: what decoding them really takes
    python scripts/image_memory.py --sweep --limit 0    # bytes per pixel of every format and mode

Makes the images itself (in a temporary folder): a lossless WebP of 7999 x 7999 (a few dozen
bytes: one colour) and a 16-bit RGBA PNG of the same size (about 500 KB of zeros), just under the
default 64-megapixel limit. Each runs in a fresh worker child (``filejobs.jobs.executor``), under
``--limit`` (FILEJOBS_JOB_MEMORY_LIMIT: bytes or 512MiB, 1GiB; 0: none); the line printed is the
outcome and the child's peak RSS (VmHWM) and peak address space (VmPeak, what the limit counts).

``--sweep`` makes one image of each format and mode at two sizes (``--side`` and half of it) and
prints the bytes per pixel that decoding and shrinking held at once (the difference between the two
peaks over the difference in pixels), next to what the processor estimates before decoding.
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

from PIL import Image

from filejobs.jobs.executor import ChildProcess, Control, Outcome
from filejobs.jobs.messages import RunRequest
from filejobs.memory import parse_size
from filejobs.processors.base import Limits

SPEC = "filejobs.processors.thumbnail:Thumbnail"
MiB = 2**20
SWEEP = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "WEBP": ("RGB", "RGBA"),
    "TIFF": ("1", "L", "RGB", "RGBA", "CMYK", "I;16", "I", "F"),
    "GIF": ("P",),
    "BMP": ("RGB",),
    "JPEG": ("L", "RGB", "CMYK"),
}


def status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure (VmHWM, VmPeak, VmRSS, VmSize) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def png16_rgba(path: Path, side: int) -> None:
    """A 16-bit RGBA PNG of zeros, written row by row (Pillow cannot write 16-bit RGBA)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + side * 8)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def lossless_webp(path: Path, side: int) -> None:
    Image.new("RGB", (side, side), (10, 20, 30)).save(path, "WEBP", lossless=True, quality=0, method=0)


def sample(path: Path, fmt: str, mode: str, side: int) -> None:
    colour = 1 if mode in ("1", "L", "P", "I;16", "I", "F") else None
    Image.new(mode, (side, side), colour).save(path, fmt)


def measure(path: Path, limit: int) -> tuple[Outcome, float, dict[str, int]]:
    """Run the thumbnail of ``path`` in a fresh child under ``limit``; its outcome and peaks."""
    child = ChildProcess()
    try:
        child.start()
        assert child.pid is not None
        pid = child.pid
        figures = {"base_rss": status(pid, "VmRSS"), "base_vsz": status(pid, "VmSize")}
        request = RunRequest(
            spec=SPEC,
            input=str(path),
            output_dir=str(path.parent / "out"),
            params={"size": 256},
            file_name=path.name,
            limits=Limits(max_image_pixels=64_000_000, memory_bytes=limit),
        )
        started = time.monotonic()
        outcome = child.run(request, tick=lambda *_: Control.CONTINUE, timeout=600, cancel_grace=1)
        seconds = time.monotonic() - started
        if child.alive():
            figures.update(peak_rss=status(pid, "VmHWM"), peak_vsz=status(pid, "VmPeak"))
        return outcome, seconds, figures
    finally:
        child.kill()


def describe(outcome: Outcome) -> str:
    if outcome.kind == "error":
        return f"error {outcome.failed.code}"
    return outcome.kind


def hostile(folder: Path, side: int, limit: int) -> None:
    cases = {"lossless WebP": ("big.webp", lossless_webp), "16-bit RGBA PNG": ("big16.png", png16_rgba)}
    for name, (file_name, make) in cases.items():
        path = folder / file_name
        make(path, side)
        outcome, seconds, fig = measure(path, limit)
        peaks = (
            f"peak RSS {fig['peak_rss'] / MiB:,.0f} MiB, peak VSZ {fig['peak_vsz'] / MiB:,.0f} MiB"
            if "peak_rss" in fig
            else "child replaced"
        )
        idle = f"idle child: RSS {fig['base_rss'] / MiB:,.0f} MiB, VSZ {fig['base_vsz'] / MiB:,.0f} MiB"
        print(
            f"{name} {side}x{side} ({path.stat().st_size:,} bytes): {describe(outcome)} "
            f"in {seconds:.1f} s; {peaks} ({idle})"
        )
        if outcome.kind == "error":
            print(f"    {outcome.failed.message}")


def sweep(folder: Path, side: int, limit: int) -> None:
    from filejobs.processors.thumbnail import _peak_bytes_per_pixel  # not in older checkouts

    print(f"{'format':6} {'mode':5} {'measured B/px':>13} {'estimate B/px':>13}")
    half = side // 2
    for fmt, modes in SWEEP.items():
        for mode in modes:
            peaks = []
            for edge in (half, side):
                path = folder / f"{fmt}-{mode.replace(';', '')}-{edge}.{fmt.lower()}"
                sample(path, fmt, mode, edge)
                outcome, _, fig = measure(path, limit)
                if outcome.kind != "done":
                    print(f"{fmt:6} {mode:5} {describe(outcome)}")
                    break
                peaks.append(fig["peak_rss"] - fig["base_rss"])
            else:
                measured = (peaks[1] - peaks[0]) / (side * side - half * half)
                with Image.open(path) as im:
                    im.draft(None, (512, 512))
                    estimate = _peak_bytes_per_pixel(im) * im.width * im.height / (side * side)
                print(f"{fmt:6} {mode:5} {measured:13.2f} {estimate:13.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--limit", default="1GiB", help="the job memory limit (bytes, 512MiB, 1GiB; 0: none)")
    parser.add_argument("--side", type=int, default=7999, help="edge of the images in pixels (default 7999)")
    parser.add_argument("--sweep", action="store_true", help="bytes per pixel of every format and mode")
    args = parser.parse_args(argv)
    limit = parse_size(args.limit)
    if limit is None:
        parser.error(f"--limit: not a size: {args.limit!r}")
    with tempfile.TemporaryDirectory(prefix="image-memory-") as folder:
        (sweep if args.sweep else hostile)(Path(folder), args.side, limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
