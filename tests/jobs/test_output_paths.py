"""A job attempt's output directory: named without ``resolve()`` when its key is one this service makes,
and still refused when a key would leave the data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from filejobs.ids import new_job_id
from filejobs.storage import LocalStorage


def test_an_attempts_output_directory_is_fresh_and_under_the_data_directory(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "data")
    job_id = new_job_id()
    first = storage.workspace(job_id, 1).output_dir()
    (first / "out.txt").write_text("x")
    second = storage.workspace(job_id, 2).output_dir()
    assert second == storage.root / "outputs" / job_id / "2"
    assert second.is_dir()
    assert not any(second.iterdir())
    assert not first.exists()  # earlier attempts' outputs go
    (second / "out.txt").write_text("x")
    third = storage.workspace(job_id, 3).output_dir(create=False)  # as the runner asks: a path only
    assert third == storage.root / "outputs" / job_id / "3"
    assert not third.exists()
    assert not second.exists()  # earlier attempts' outputs go all the same
    third.mkdir(parents=True)
    storage.delete_outputs(job_id, 3)
    assert not (storage.root / "outputs" / job_id).exists()


@pytest.mark.parametrize(
    "key",
    ["outputs/../../etc", "outputs/{id}/../../../etc", "outputs/{id}/1/../../../../etc", "outputs/.."],
)
def test_keys_that_leave_the_data_directory_are_refused(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "data")
    with pytest.raises(ValueError, match="escapes"):
        storage.path(key.format(id=new_job_id()))


def test_other_output_keys_are_resolved(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "data")
    job_id = new_job_id()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    attempt = storage.root / "outputs" / job_id / "1"
    attempt.mkdir(parents=True)
    (attempt / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="escapes"):  # a file key below an attempt: resolved, symlink seen
        storage.path(f"outputs/{job_id}/1/link/file")
    assert storage.path(f"outputs/{job_id}/1/out.txt") == attempt / "out.txt"
    # Not an attempt number (a superscript digit): resolved like any other key, not taken as ours.
    assert storage.path(f"outputs/{job_id}/\u00b2") == storage.root / "outputs" / job_id / "\u00b2"
