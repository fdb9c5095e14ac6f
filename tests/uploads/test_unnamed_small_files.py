"""A held small file is written as an unnamed file in ``uploads/`` (``O_TMPFILE``) and linked under
its key after its fsync (issue 20): no temp name, lock or rename; nothing left behind by a failure
or a crash before the link; a named temp file where the filesystem cannot make unnamed ones."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from filejobs import storage as storage_module
from filejobs.storage import LocalStorage, LocalUploadSink, open_unnamed

pytestmark = pytest.mark.skipif(not storage_module._UNNAMED["ok"], reason="no O_TMPFILE or /proc here")


def held(storage: LocalStorage, content: bytes) -> LocalUploadSink:
    sink = storage.open_upload()
    asyncio.run(sink.write(content, final=True))
    assert sink.held
    return sink


def entries(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for sub in ("tmp", "uploads") for p in (root / sub).iterdir()
    )


def test_a_held_file_is_linked_under_its_key_only_after_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path)
    sink = held(storage, b"small content\n")
    events: list[tuple[str, list[str]]] = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", entries(tmp_path)))
        real_fsync(fd)

    def link(*args: Any, **kwargs: Any) -> None:
        events.append(("link", entries(tmp_path)))
        real_link(*args, **kwargs)

    def replace(*args: Any, **kwargs: Any) -> None:
        events.append(("replace", entries(tmp_path)))
        real_replace(*args, **kwargs)

    monkeypatch.setattr(storage_module.os, "fsync", fsync)
    monkeypatch.setattr(storage_module.os, "link", link)
    monkeypatch.setattr(storage_module.os, "replace", replace)
    sink.placer("uploads/one")()  # as the group committer's place pool calls it
    # The file's fsync came first, while no name of it existed anywhere; then its one link.
    assert events == [("fsync", []), ("link", [])]
    final = tmp_path / "uploads" / "one"
    assert final.read_bytes() == b"small content\n"
    assert final.stat().st_mode & 0o777 == 0o600
    assert final.stat().st_nlink == 1
    assert entries(tmp_path) == ["uploads/one"]


def test_the_async_commit_takes_the_same_way(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sink = held(storage, b"x" * 1000)
    asyncio.run(sink.commit("uploads/two"))
    assert (tmp_path / "uploads" / "two").read_bytes() == b"x" * 1000
    assert entries(tmp_path) == ["uploads/two"]


@pytest.mark.parametrize("step", ["fsync", "link"])
def test_a_failure_before_the_link_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    storage = LocalStorage(tmp_path)
    sink = held(storage, b"doomed\n")

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage_module.os, step, fail)
    with pytest.raises(OSError, match="No space"):
        sink.placer("uploads/three")()
    monkeypatch.undo()
    asyncio.run(sink.abort())  # what the route does after the committer's error
    assert entries(tmp_path) == []
    assert sink._fd is None


def test_a_name_left_by_an_earlier_try_is_replaced(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    (tmp_path / "uploads" / "four").write_bytes(b"an orphan of a try that died before its row")
    held(storage, b"the upload\n").placer("uploads/four")()
    assert (tmp_path / "uploads" / "four").read_bytes() == b"the upload\n"


def test_a_missing_directory_is_made(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    (tmp_path / "uploads").rmdir()
    held(storage, b"five\n").placer("uploads/five")()
    assert (tmp_path / "uploads" / "five").read_bytes() == b"five\n"


def test_without_unnamed_files_a_held_file_takes_a_named_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path)
    monkeypatch.setitem(storage_module._UNNAMED, "ok", True)
    real_open = os.open
    replaced: list[str] = []
    real_replace = os.replace

    def no_tmpfile(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)

    def replace(source: Any, target: Any) -> None:
        replaced.append(Path(source).parent.name)
        real_replace(source, target)

    monkeypatch.setattr(storage_module.os, "open", no_tmpfile)
    monkeypatch.setattr(storage_module.os, "replace", replace)
    held(storage, b"six\n").placer("uploads/six")()
    assert replaced == ["tmp"]  # written as a temp file, renamed into place
    assert storage_module._UNNAMED["ok"] is False  # not tried again on this filesystem
    held(storage, b"seven\n").placer("uploads/seven")()
    assert replaced == ["tmp", "tmp"]
    assert entries(tmp_path) == ["uploads/seven", "uploads/six"]
    assert (tmp_path / "uploads" / "six").read_bytes() == b"six\n"


def test_a_process_killed_before_the_link_leaves_nothing(tmp_path: Path) -> None:
    """kill -9 between the write (and fsync) and the link: the kernel frees the unnamed file."""
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from filejobs.storage import open_unnamed\n"
        "fd = open_unnamed(Path(sys.argv[1]))\n"
        "assert fd is not None\n"
        "os.write(fd, b'x' * 4096)\n"
        "os.fsync(fd)\n"
        "print('written', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout == "written\n", done.stderr
    assert done.returncode == -9
    assert list(tmp_path.iterdir()) == []
    fd = open_unnamed(tmp_path)  # and the directory still takes new ones
    assert fd is not None
    os.close(fd)
