"""The batch scripts in scripts/, run as a user would (``python scripts/x.py ...``) against a real server."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from filejobs.testing import Server, base_env
from tests.cli.helpers import make_tree
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

THUMBNAILS = REPO / "scripts" / "thumbnails.py"
PROFILE_CSVS = REPO / "scripts" / "profile_csvs.py"


def script(path: Path, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *(str(a) for a in args)],
        cwd=cwd or REPO,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("path", [THUMBNAILS, PROFILE_CSVS])
def test_help(path: Path) -> None:
    result = script(path, "--help")
    assert result.returncode == 0, result.stderr
    assert "--out" in result.stdout
    assert "--server" in result.stdout


def image(size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, fmt)
    return buffer.getvalue()


def test_thumbnails_of_a_folder_with_a_report(server: Server, tmp_path: Path) -> None:
    photos = make_tree(
        tmp_path / "photos",
        {
            "beach.jpg": image((400, 300), "JPEG"),
            "2024/tall.png": image((100, 400), "PNG"),
            "2024/same.jpg": image((64, 64), "JPEG"),
            "2024/same.png": image((32, 32), "PNG"),
            "broken.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
            "notes.txt": "not a photo",
            ".cache/hidden.jpg": image((10, 10), "JPEG"),
        },
    )
    out = tmp_path / "thumbs"
    result = script(THUMBNAILS, photos, "--out", out, "--size", "100", "--server", server.base_url)
    assert result.returncode == 1, result.stderr  # broken.jpg failed
    assert "5 photos, 4 thumbnails" in result.stderr
    with open(out / "report.csv", newline="") as handle:
        rows = {Path(row["path"]).relative_to(photos).as_posix(): row for row in csv.DictReader(handle)}
    assert set(rows) == {"beach.jpg", "2024/tall.png", "2024/same.jpg", "2024/same.png", "broken.jpg"}
    beach = rows["beach.jpg"]
    assert (beach["status"], beach["original"], beach["thumbnail"]) == ("succeeded", "400x300", "100x75")
    assert beach["job_id"]
    assert int(beach["bytes"]) == (out / "beach.thumb.webp").stat().st_size
    assert rows["2024/tall.png"]["thumbnail"] == "25x100"
    assert rows["broken.jpg"]["status"] == "failed"
    assert rows["broken.jpg"]["error"].startswith("image_")
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.webp"))
    assert written == [
        "2024/same.jpg.thumb.webp",
        "2024/same.png.thumb.webp",
        "2024/tall.thumb.webp",
        "beach.thumb.webp",
    ]
    with Image.open(out / "2024" / "tall.thumb.webp") as im:
        assert im.size == (25, 100)


CSV_FILES = {
    "sales.csv": "id,amount,day\n1,9.5,2024-01-01\n2,3.25,2024-01-02\n3,1,2024-01-03\n",
    "nested/people.tsv": "name\tage\nann\t31\nbob\t42\n",
    "nested/bad.csv": "a,b\n1,2\n3,4,5\n6,7\n",
    "empty.csv": "",
}


def test_profile_csvs_as_markdown(server: Server, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", CSV_FILES)
    out = tmp_path / "summary.md"
    result = script(PROFILE_CSVS, tree, "--out", out, "--server", server.base_url)
    assert result.returncode == 1, result.stderr  # empty.csv is refused
    assert "4 files, 3 profiled" in result.stderr
    text = out.read_text()
    assert "| sales.csv | succeeded | 3 | 3 | 0 | utf-8 | `,` |" in text
    assert "| nested/people.tsv | succeeded | 2 | 2 | 0 | utf-8 | `tab` |" in text
    assert "| nested/bad.csv | succeeded | 3 | 2 | 1 |" in text
    assert "malformed rows: 1 (lines 3)" in text
    assert "| amount | float | 0 | 3 | 1.0 | 9.5 |" in text
    assert "| day | date |" in text
    assert "**rejected**" in text


def test_profile_csvs_as_csv(server: Server, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", {k: v for k, v in CSV_FILES.items() if k != "empty.csv"})
    out = tmp_path / "summary.csv"
    result = script(PROFILE_CSVS, tree, "--out", out, "--server", server.base_url)
    assert result.returncode == 0, result.stderr
    with open(out, newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert rows["sales.csv"]["rows"] == "3"
    assert rows["sales.csv"]["column_types"] == "id:integer; amount:float; day:date"
    assert rows["nested/people.tsv"]["delimiter"] == "tab"
    assert rows["nested/bad.csv"]["malformed_rows"] == "1"
    assert all(row["job_id"] and row["status"] == "succeeded" for row in rows.values())
