"""Resumable uploads in the bucket: any API node resumes any upload (nothing is on a node's disk).

Keys (under the storage URL's prefix):

- ``tus/<owner>/<upload id>/state.json``: the upload's record (:class:`State`), replaced whole;
- ``tus/<owner>/<upload id>/tail-<offset>``: the bytes past the last full part, up to ``offset``;
- ``tus/jobs/<job id>``: a marker while the multipart upload to ``uploads/<job id>`` is the
  upload's (the sweeper's abort of stale multipart uploads leaves those alone);
- ``uploads/<job id>``: one multipart upload receiving the bytes as parts of ``part_size``, then,
  completed, the job's input (the job id is fixed when the multipart upload starts).

A PATCH's bytes go out as parts as soon as a part is full (one part buffered in memory per
request). S3 wants 5 MiB or more in every part but the last, and a tus chunk may be any size, so
what is past the last full part when an offset is recorded goes up as a small object, the tail;
the next write starts from it (read back, completed into the next part). The recorded offset
counts parts and tail, both in the bucket before the record that names them: ``Upload-Offset``
counts only bytes durably in the bucket. A part uploaded but not recorded (a request that died)
is written over by the next part of that number, or left out of the completion.

Completion: the tail goes up as the last part, ``CompleteMultipartUpload`` makes the object, and
the job is made from it in place (no copy). Termination and expiry abort the multipart upload
and delete the record, the tail, the marker (and a completed object no job took).

One request at a time holds an upload: :mod:`filejobs.tus.locks` (an advisory lock on
PostgreSQL, so held across nodes). Every method does network I/O: call them in a worker thread.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from filejobs.errors import Gone
from filejobs.ids import new_job_id
from filejobs.object_storage.store import RESUMABLE_MARKERS, S3Storage
from filejobs.storage import Digest, UploadSink, upload_key
from filejobs.tus.local import ID, owner_dir_name
from filejobs.tus.locks import Hold, UploadLocks, hold
from filejobs.tus.store import UploadInfo, Usage, check_bounds

log = logging.getLogger(__name__)

ROOT = "tus/"
STATE = "state.json"
#: Seconds a creation waits for another creation of the same key (its bounds are checked under it).
CREATE_WAIT = 10.0
READ_CHUNK = 1024 * 1024


@dataclass
class State:
    """An upload's record in the bucket. ``offset`` = the parts' sizes + ``tail_size``."""

    info: UploadInfo
    multipart: str | None = None  # the multipart upload's id, once started
    object_job: str | None = None  # the job id in its key (``uploads/<object_job>``)
    parts: list[tuple[int, str, int]] = field(default_factory=list)  # number, ETag, size
    tail: str | None = None  # the tail object's key
    tail_size: int = 0
    sealed: bool = False  # the multipart upload is completed: the object is there

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> State:
        data = json.loads(raw)
        data["info"] = UploadInfo(**data["info"])
        data["parts"] = [tuple(part) for part in data["parts"]]
        return cls(**data)


class S3Upload:
    """One held upload (see :class:`filejobs.tus.store.OpenUpload`)."""

    def __init__(self, store: S3UploadStore, state: State, lock: Hold) -> None:
        self.store = store
        self.state = state
        self.info = state.info
        self._lock: Hold | None = lock
        self._buffer: bytearray | None = None  # bytes past the last part (None: tail not read yet)
        self._parts = list(state.parts)  # with the parts sent since the last record
        self._written = False  # bytes were written since the last record
        self._old_tails: set[str] = set()
        #: The records this hold wrote or found, by offset (a PATCH refused 413 goes back to one).
        self._recorded = {self.info.offset: copy.deepcopy(state)}

    @property
    def _prefix(self) -> str:
        return self.store.upload_prefix(self.info.owner, self.info.id)

    def _load_buffer(self) -> bytearray:
        if self._buffer is None:
            self._buffer = bytearray(self.store.get_bytes(self.state.tail) if self.state.tail else b"")
        return self._buffer

    def _start_multipart(self) -> str:
        state = self.state
        if state.multipart is None:
            if self.info.job_id is None:
                self.info.job_id = new_job_id()
            state.object_job = self.info.job_id
            self.store.put_bytes(self.store.key(RESUMABLE_MARKERS + state.object_job), self._prefix.encode())
            answer = self.store.call(
                "create_multipart_upload", Key=self.store.key(upload_key(state.object_job))
            )
            state.multipart = str(answer["UploadId"])
            self.store.write_state(state)  # the same offset and parts: only the upload's id is new
            self._recorded[self.info.offset] = copy.deepcopy(state)
        return state.multipart

    def _send_part(self, data: bytes) -> None:
        upload_id = self._start_multipart()
        assert self.state.object_job is not None
        number = self._parts[-1][0] + 1 if self._parts else 1
        try:
            answer = self.store.call(
                "upload_part",
                Key=self.store.key(upload_key(self.state.object_job)),
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
        except FileNotFoundError:  # NoSuchUpload: aborted behind our back, its parts gone
            raise Gone(
                "This upload's stored bytes were removed from the bucket; start a new upload."
            ) from None
        self._parts.append((number, str(answer["ETag"]), len(data)))

    def write(self, pieces: Sequence[bytes | memoryview]) -> None:
        self._written = True
        buffer = self._load_buffer()
        for piece in pieces:
            buffer += piece
        part_size = self.store.storage.part_size
        while len(buffer) >= part_size:
            self._send_part(bytes(buffer[:part_size]))
            del buffer[:part_size]

    def commit(self, offset: int) -> None:
        if not self._written and offset == self.info.offset:
            return  # recorded already (a PATCH's end right after a checkpoint): no request
        self._written = False
        buffer = self._load_buffer()
        assert offset == sum(part[2] for part in self._parts) + len(buffer), "offset is not what was written"
        old_tail = self.state.tail
        tail: str | None = None
        if buffer and self.info.length == offset:  # the last bytes: the last part, no tail
            self._send_part(bytes(buffer))
            buffer.clear()
        elif buffer:
            tail = f"{self._prefix}tail-{offset}"
            self.store.put_bytes(tail, bytes(buffer))
        self.state.parts = list(self._parts)
        self.state.tail, self.state.tail_size = tail, len(buffer)
        self.info.offset = offset
        self.store.write_state(self.state)
        self._recorded[offset] = copy.deepcopy(self.state)
        if old_tail is not None and old_tail != tail:
            self._old_tails.add(old_tail)  # deleted at close: a 413 may go back to it

    def discard(self) -> None:
        self._written = False
        self._parts = list(self.state.parts)
        self._buffer = None

    def save(self) -> None:
        """Record ``info``; an offset moved back (a refused PATCH) takes that offset's parts and tail."""
        if self.info.offset != sum(part[2] for part in self.state.parts) + self.state.tail_size:
            earlier = self._recorded[self.info.offset]
            self.state.parts, self.state.tail, self.state.tail_size = (
                earlier.parts,
                earlier.tail,
                earlier.tail_size,
            )
            self._parts, self._buffer, self._written = list(earlier.parts), None, False
        self.store.write_state(self.state)

    # ---- completion -----------------------------------------------------------------------

    def seal(self) -> None:
        """All bytes are in: the tail goes up as the last part and the object is completed."""
        state = self.state
        if state.sealed:
            if self._object_size() != self.info.length:
                raise Gone("This upload's file was removed before its job was made; start a new one.")
            return
        if state.tail is not None:
            data = self.store.get_bytes(state.tail)
            self._parts = list(state.parts)
            self._send_part(data)
            state.parts, state.tail_size = list(self._parts), 0
        assert state.multipart is not None
        assert state.object_job is not None
        key = self.store.key(upload_key(state.object_job))
        try:
            self.store.call(
                "complete_multipart_upload",
                Key=key,
                UploadId=state.multipart,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag, _ in state.parts]},
            )
        except FileNotFoundError:  # an earlier try completed it, then died before recording so
            if self._object_size() != self.info.length:
                raise
        tail, state.tail, state.sealed = state.tail, None, True
        self.store.write_state(state)
        if tail is not None:
            self.store.delete_key(tail)

    def _object_size(self) -> int | None:
        assert self.state.object_job is not None
        try:
            return self.store.storage.size_of(upload_key(self.state.object_job))
        except FileNotFoundError:
            return None

    def read(self, start: int, size: int) -> bytes:
        """Bytes of the sealed object."""
        assert self.state.object_job is not None
        body = self.store.storage.open_read(
            upload_key(self.state.object_job), f"bytes={start}-{start + size - 1}"
        )["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def hash_all(self) -> str:
        """The SHA-256 of the sealed object, read back from the bucket."""
        assert self.state.object_job is not None
        digest = hashlib.sha256()
        body = self.store.storage.open_read(upload_key(self.state.object_job))["Body"]
        try:
            for chunk in body.iter_chunks(READ_CHUNK):
                digest.update(chunk)
        finally:
            body.close()
        return digest.hexdigest()

    def sink(self) -> UploadSink:
        assert self.state.object_job is not None
        return ObjectInPlace(self.state.object_job)

    def finish(self, expires_at: float) -> None:
        """The job exists: keep the record (``done``); a completed object no job took goes."""
        self.info.done = True
        self.info.expires_at = expires_at
        job = self.state.object_job
        if job is not None and job != self.info.job_id:  # a replayed Idempotency-Key: the earlier job's
            self.store.delete_key(self.store.key(upload_key(job)))
        self.store.write_state(self.state)
        if job is not None:
            self.store.delete_key(self.store.key(RESUMABLE_MARKERS + job))

    def remove(self) -> None:
        self.store.remove_upload(self.state)

    def close(self) -> None:
        try:
            for tail in self._old_tails - {self.state.tail}:
                try:
                    self.store.delete_key(tail)
                except Exception:  # best effort: the upload's removal deletes what is under it
                    log.warning("could not delete %s; the upload's removal will", tail, exc_info=True)
        finally:
            self._old_tails.clear()
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.release()


class ObjectInPlace:
    """The sink of a sealed upload: its object is the job's input already (``uploads/<job id>``)."""

    held = False  # no bytes in memory
    held_bytes: bytes | None = None

    def __init__(self, job_id: str) -> None:
        self.job_id: str | None = job_id

    async def write(self, data: Any, *, final: bool = False, digest: Digest | None = None) -> None:
        raise TypeError("a finished upload takes no more bytes")

    async def commit(self, key: str, *, sync_dir: bool = True) -> None:
        assert key == upload_key(self.job_id or ""), key

    def placer(self, key: str) -> None:
        return None

    async def abort(self) -> None:
        """Kept: a try refused for now (503, 429) is tried again with the same object; the
        upload's removal (or expiry) deletes it."""
        return None


class S3UploadStore:
    """Uploads in ``storage``'s bucket, held through ``locks``; ``expiry`` is the uploads' (for the
    sweep: a record written more recently than that cannot have expired)."""

    def __init__(self, storage: S3Storage, locks: UploadLocks, *, expiry: float) -> None:
        self.storage = storage
        self.locks = locks
        self.expiry = expiry

    # ---- the bucket ------------------------------------------------------------------------

    def key(self, key: str) -> str:
        return self.storage.bucket.object_key(key)

    def call(self, operation: str, /, **kwargs: Any) -> Any:
        return self.storage.bucket.call(operation, **kwargs)

    def upload_prefix(self, owner: str, upload_id: str) -> str:
        return self.key(f"{ROOT}{owner_dir_name(owner)}/{upload_id}/")

    # Keys passed below are the bucket's (the storage URL's prefix included: :meth:`key`).

    def put_bytes(self, key: str, data: bytes) -> None:
        self.call("put_object", Key=key, Body=data)

    def get_bytes(self, key: str) -> bytes:
        body = self.call("get_object", Key=key)["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def delete_key(self, key: str) -> None:
        self.call("delete_object", Key=key)

    def write_state(self, state: State) -> None:
        self.call(
            "put_object", Key=self.upload_prefix(state.info.owner, state.info.id) + STATE, Body=state.encode()
        )

    def _read_state(self, key: str) -> State | None:
        try:
            return State.decode(self.get_bytes(key))
        except FileNotFoundError:
            return None

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        token: dict[str, str] = {}
        while True:
            page = self.call("list_objects_v2", Prefix=prefix, **token)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    # ---- the store -------------------------------------------------------------------------

    def create(self, info: UploadInfo, *, max_uploads: int, max_bytes: int) -> None:
        owner_lock = hold(self.locks, f"owner:{owner_dir_name(info.owner)}", CREATE_WAIT)
        try:  # the bounds hold under concurrent creations
            used = self.usage(info.owner)
            check_bounds(used, info.length, max_uploads=max_uploads, max_bytes=max_bytes)
            self.write_state(State(info))
        finally:
            owner_lock.release()

    def get(self, owner: str, upload_id: str) -> UploadInfo | None:
        if not ID.fullmatch(upload_id):
            return None
        state = self._read_state(self.upload_prefix(owner, upload_id) + STATE)
        return state.info if state is not None else None

    def open(self, owner: str, upload_id: str, *, wait: float) -> S3Upload | None:
        if not ID.fullmatch(upload_id):
            return None
        lock = hold(self.locks, f"upload:{upload_id}", wait)
        try:
            state = self._read_state(self.upload_prefix(owner, upload_id) + STATE)  # under the hold
        except BaseException:
            lock.release()
            raise
        if state is None or state.info.owner != owner:
            lock.release()
            return None
        return S3Upload(self, state, lock)

    def usage(self, owner: str) -> Usage:
        uploads = held = 0
        for item in self._list(self.key(f"{ROOT}{owner_dir_name(owner)}/")):
            if not item["Key"].endswith("/" + STATE):
                continue
            state = self._read_state(item["Key"])
            if state is not None and not state.info.done:
                uploads += 1
                held += state.info.length if state.info.length is not None else state.info.offset
        return Usage(uploads, held)

    def remove_expired(self, now: float) -> int:
        removed = 0
        markers = self.key(RESUMABLE_MARKERS)
        for item in self._list(self.key(ROOT)):
            key = item["Key"]
            if key.startswith(markers) or not key.endswith("/" + STATE):
                continue
            if item["LastModified"].timestamp() > now - self.expiry:
                continue  # written within the expiry: an upload's expiry is at least that far off
            state = self._read_state(key)
            if state is None or state.info.expires_at > now:
                continue
            upload_id = key.rsplit("/", 2)[-2]
            lock = self.locks.try_hold(f"upload:{upload_id}")
            if lock is None:
                continue  # a request holds it: next pass
            try:
                state = self._read_state(key)
                if state is not None and state.info.expires_at <= now:
                    self.remove_upload(state)
                    removed += 1
            finally:
                lock.release()
        return removed

    def remove_upload(self, state: State) -> None:
        """Abort the multipart upload; delete the tail, the marker, the record (and an object no job took)."""
        job = state.object_job
        if job is not None:
            key = self.key(upload_key(job))
            page = self.call("list_multipart_uploads", Prefix=key)
            for upload in page.get("Uploads", []):
                if upload["Key"] == key:
                    with contextlib.suppress(FileNotFoundError):
                        self.call("abort_multipart_upload", Key=key, UploadId=upload["UploadId"])
            if not state.info.done:
                self.delete_key(key)
            self.delete_key(self.key(RESUMABLE_MARKERS + job))
        prefix = self.upload_prefix(state.info.owner, state.info.id)
        for item in list(self._list(prefix)):
            if not item["Key"].endswith("/" + STATE):
                self.delete_key(item["Key"])
        self.delete_key(prefix + STATE)  # last: what is left is found again by the next sweep
