"""The suite's results: one :class:`Figure` per measured quantity, printed as a table or JSON."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil


@dataclass
class Figure:
    """A measured figure of filejobs, the baselines measured in the same run, and its target.

    ``ratios`` are ``value / baseline`` for each baseline (whatever the unit: the target says which
    way is better); ``met`` is None when the figure has no target or could not be judged (smoke)."""

    key: str  # stable identifier, e.g. "upload_1gib_mbps"
    label: str  # what the table shows, e.g. "1 GiB upload"
    unit: str  # "MB/s", "ms", "MiB", "req/s", "x"
    value: float
    baselines: dict[str, float] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratios(self) -> dict[str, float]:
        return {name: (self.value / base if base else math.inf) for name, base in self.baselines.items()}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _number(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def rows(figures: list[Figure]) -> list[list[str]]:
    out = []
    for fig in figures:
        baselines = ", ".join(f"{name} {_number(v)}" for name, v in fig.baselines.items())
        ratios = ", ".join(f"{r:.2f}x {name}" for name, r in fig.ratios.items())
        met = {True: "yes", False: "**no**", None: "-"}[fig.met]
        out.append(
            [
                fig.label,
                f"{_number(fig.value)} {fig.unit}",
                baselines or "-",
                ratios or "-",
                fig.target or "-",
                met,
            ]
        )
    return out


HEADER = ["figure", "filejobs", "baselines (same run)", "ratio", "target", "met"]


def markdown(figures: list[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(figures)]
    return "\n".join(lines)


def text_table(figures: list[Figure]) -> str:
    table = [HEADER, *rows(figures)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_json(figures: list[Figure], extra: dict[str, Any]) -> str:
    return json.dumps(
        {**extra, "machine": machine(), "figures": [{**asdict(f), "ratios": f.ratios} for f in figures]},
        indent=2,
    )
