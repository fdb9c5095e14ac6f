"""``inspect`` takes a job's sniffed type instead of sniffing the same bytes again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from filejobs.processors import inspect
from filejobs.processors.base import Context, NoParams
from filejobs.sniff import SNIFF_BYTES, sniff
from tests.processors.images import encode

PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
#: JSON over SNIFF_BYTES: its sample is cut mid-document, so its type is not application/json.
LONG_JSON = json.dumps([{"n": n, "text": "x" * 40} for n in range(2000)]).encode()
SAMPLES = {
    "text": b"one line\nand another, longer line\n",
    "csv": b"name,age,city\nada,36,london\nalan,41,wilmslow\n",
    "json": b'{"a": [1, 2, 3], "b": {"c": null}}\n',
    "long json": LONG_JSON,
    "png": encode(Image.new("RGB", (4, 4), (255, 0, 0)), "PNG"),
    "pdf": PDF,
    "empty": b"",
    "latin-1": "Grüße aus Köln, ça va? Ñandú\nzweite Zeile\n".encode("latin-1"),
}


def run(path: Path, content_type: str, sniffed: bool) -> dict[str, Any]:
    ctx = Context(
        input_path=path,
        output_dir=path.parent,
        file_name=path.name,
        content_type=content_type,
        progress=lambda fraction, message: None,
        cancelled=lambda: False,
        content_type_sniffed=sniffed,
    )
    return inspect.Inspect().run(ctx, NoParams()).result


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_a_sniffed_type_gives_the_result_sniffing_gives_without_the_magic_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    content = SAMPLES[kind]
    path = tmp_path / "input"
    path.write_bytes(content)
    sniffed = run(path, "application/octet-stream", sniffed=False)  # a type not sniffed: not used
    known = sniff(content[:SNIFF_BYTES])  # what the API records for these bytes

    def no_sniff(sample: bytes) -> str:
        raise AssertionError("sniffed again")

    monkeypatch.setattr(inspect, "sniff", no_sniff)
    assert run(path, known, sniffed=True) == sniffed
