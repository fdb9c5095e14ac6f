"""The local store's offset record: a commit rewrites one checksummed slot in place (info.json is
not replaced), a torn slot falls back to the offset before, and an upload made before the offset
file existed gets one on its next commit."""

from __future__ import annotations

import time
from pathlib import Path

from filejobs.storage import LocalStorage
from filejobs.tus import local
from filejobs.tus.store import UploadInfo


def new_upload(tmp_path: Path) -> tuple[local.LocalUploadStore, UploadInfo]:
    store = local.LocalUploadStore(tmp_path / "tus", LocalStorage(tmp_path / "files"))
    now = time.time()
    info = UploadInfo(
        id="ab" * 16, owner="o", length=100, offset=0, metadata={}, created_at=now, expires_at=now + 60
    )
    store.create(info, max_uploads=5, max_bytes=0)
    return store, info


def test_a_commit_rewrites_a_slot_not_info_json(tmp_path: Path) -> None:
    store, info = new_upload(tmp_path)
    upload = store.open("o", info.id, wait=0)
    assert upload is not None
    directory = upload.directory
    before = (directory / local.INFO).stat().st_ino
    for end in (10, 30, 45):
        upload.write([b"x" * (end - upload.info.offset)])
        upload.commit(end)
    assert (directory / local.INFO).stat().st_ino == before  # not replaced
    assert (directory / local.OFFSET).stat().st_size == 2 * local.SLOT_SPACING
    upload.info.length = 200  # a length declared with a PATCH: info.json is written too
    upload.write([b"y" * 5])
    upload.commit(50)
    upload.close()
    again = store.get("o", info.id)
    assert again is not None
    assert (again.offset, again.length) == (50, 200)


def test_a_torn_slot_reads_the_offset_before(tmp_path: Path) -> None:
    store, info = new_upload(tmp_path)
    upload = store.open("o", info.id, wait=0)
    assert upload is not None
    upload.write([b"a" * 20])
    upload.commit(20)
    upload.write([b"b" * 20])
    upload.commit(40)
    upload.close()
    path = upload.directory / local.OFFSET
    raw = bytearray(path.read_bytes())
    newest = max(range(2), key=lambda i: local.SLOT.unpack_from(raw, i * local.SLOT_SPACING)[1])
    raw[newest * local.SLOT_SPACING + 12] ^= 0xFF  # the newest slot's offset torn
    path.write_bytes(bytes(raw))
    assert local.recorded_offset(upload.directory) == 20
    reopened = store.open("o", info.id, wait=0)
    assert reopened is not None
    reopened.write([b"c" * 5])  # the bytes past 20 are cut off first
    reopened.commit(25)
    reopened.close()
    assert (upload.directory / local.DATA).read_bytes() == b"a" * 20 + b"c" * 5
    assert local.recorded_offset(upload.directory) == 25


def test_an_upload_without_an_offset_file_gets_one(tmp_path: Path) -> None:
    store, info = new_upload(tmp_path)
    upload = store.open("o", info.id, wait=0)
    assert upload is not None
    upload.close()
    (upload.directory / local.OFFSET).unlink()  # as the store wrote uploads before it
    assert local.recorded_offset(upload.directory) == 0
    upload = store.open("o", info.id, wait=0)
    assert upload is not None
    upload.write([b"z" * 7])
    upload.commit(7)
    upload.close()
    assert local.recorded_offset(upload.directory) == 7
