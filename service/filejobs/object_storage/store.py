""":class:`S3Storage`: the storage interface on a bucket, and :class:`S3Workspace`, a job's
scratch directory (its input fetched from the bucket, its outputs written before they go up).

Keys are the local backend's (``uploads/<job id>``, ``outputs/<job id>/<attempt>/<name>``) under
the URL's prefix. Scratch directories live in ``DATA_DIR/scratch`` (each node's own, never
shared), named ``<job id>.<attempt>@<node>-<pid>``: removed when the attempt ends however it ends,
and, for a process killed meanwhile, by the next look of a process of the same node
(:meth:`S3Storage.remove_stale_scratch`), or after ``TEMP_MAX_AGE`` by anyone.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from filejobs.ids import is_job_id
from filejobs.object_storage.client import Bucket, Location, fix_mmap_threshold, make_client
from filejobs.object_storage.sink import S3UploadSink
from filejobs.settings import MiB, Settings
from filejobs.storage import StorageUnavailable, remove_stale_scratch, scratch_name, upload_key

#: S3's limits on a multipart upload.
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024 * MiB
#: Bytes read from the bucket per chunk when a job's input is fetched or a result streamed.
READ_CHUNK = 1024 * 1024
DELETE_BATCH = 1000
#: Seconds between two calls of an output upload's ``keep_alive`` (the lease renewal).
KEEP_ALIVE_EVERY = 0.5
#: ``<this><job id>`` marks a multipart upload to ``uploads/<job id>`` as a resumable upload's: it
#: lives as long as that upload (its expiry aborts it), not ``TEMP_MAX_AGE``.
RESUMABLE_MARKERS = "tus/jobs/"


class S3Storage:
    """Uploads and outputs in a bucket; see :mod:`filejobs.object_storage`."""

    on_disk = False  # uploads stream to the bucket: this node's free space does not limit them

    def __init__(
        self,
        bucket: Bucket,
        *,
        scratch_root: Path,
        part_size: int = 5 * MiB,
        parts_in_flight: int = 3,
    ) -> None:
        self.bucket = bucket
        self.scratch_root = scratch_root
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        scratch_root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        location = Location.parse(settings.storage_url.strip())
        fix_mmap_threshold()
        client = make_client(
            settings.s3_endpoint_url, settings.s3_timeout, sign_payload=settings.s3_sign_payload
        )
        # A part size large enough for the largest upload in 10,000 parts, within S3's limits.
        needed = math.ceil(settings.max_upload_bytes / MAX_PARTS)
        return cls(
            Bucket(location, client, settings.s3_endpoint_url),
            scratch_root=settings.data_dir / "scratch",
            part_size=min(MAX_PART_SIZE, max(settings.s3_part_size, needed)),
            parts_in_flight=settings.s3_parts_in_flight,
        )

    # ---- uploads ----------------------------------------------------------------------------

    def open_upload(self) -> S3UploadSink:
        return S3UploadSink(self)

    @staticmethod
    def upload_key(job_id: str) -> str:
        return upload_key(job_id)

    def sync_uploads_dir(self) -> None:
        """Nothing to do: a completed object is durable."""

    # ---- jobs -------------------------------------------------------------------------------

    def workspace(self, job_id: str, attempt: int) -> S3Workspace:
        return S3Workspace(self, job_id, attempt)

    def local_path(self, key: str) -> None:
        return None

    def download(self, key: str, target: Path, keep_alive: Callable[[], None] | None = None) -> None:
        """Stream the object ``key`` into the file ``target``; FileNotFoundError when it is gone.
        ``keep_alive`` is called after each chunk (an exception from it stops the copy)."""
        body = self.bucket.call("get_object", Key=self.bucket.object_key(key))["Body"]
        try:
            with open(target, "wb") as out:
                for chunk in body.iter_chunks(READ_CHUNK):
                    out.write(chunk)
                    if keep_alive is not None:
                        keep_alive()
        except Exception as exc:
            from botocore.exceptions import BotoCoreError

            if isinstance(exc, BotoCoreError):  # the connection broke mid-object
                raise StorageUnavailable(f"{self.bucket.describe()}: reading {key}: {exc}") from exc
            raise
        finally:
            body.close()

    def upload_file(self, path: Path, key: str, keep_alive: Callable[[], None] | None = None) -> None:
        """Store the file ``path`` as ``key`` (the transfer manager: multipart when large).

        ``keep_alive`` (a job's lease renewal) is called first, then every :data:`KEEP_ALIVE_EVERY`
        s from this thread while the transfer runs in another; an exception from it stops the
        transfer (its next read of the file fails, the multipart upload is aborted) and is raised."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self.part_size,
            multipart_chunksize=self.part_size,
            max_concurrency=self.parts_in_flight,
        )
        upload = partial(
            self.bucket.call,
            "upload_file",
            Filename=str(path),
            Key=self.bucket.object_key(key),
            Config=config,
        )
        if keep_alive is None:
            upload()
            return
        keep_alive()
        stop = threading.Event()

        def progress(_sent: int) -> None:
            if stop.is_set():
                raise _Stopped("the upload was stopped")

        with ThreadPoolExecutor(1, thread_name_prefix="s3-output") as pool:
            future = pool.submit(upload, Callback=progress)
            try:
                while True:
                    try:
                        future.result(timeout=KEEP_ALIVE_EVERY)
                        return
                    except TimeoutError:
                        keep_alive()
            except BaseException:
                stop.set()
                with contextlib.suppress(Exception):
                    future.result()  # it ends (aborted) before the caller cleans up
                raise

    # ---- results ----------------------------------------------------------------------------

    def open_read(self, key: str, byte_range: str | None = None) -> dict[str, Any]:
        """GetObject of ``key`` (``byte_range``: one ``bytes=a-b`` range); FileNotFoundError when it is
        gone. The caller closes ``["Body"]``."""
        extra = {"Range": byte_range} if byte_range else {}
        result: dict[str, Any] = self.bucket.call("get_object", Key=self.bucket.object_key(key), **extra)
        return result

    def head(self, key: str) -> dict[str, Any]:
        """HeadObject of ``key`` (its ``ContentLength``, ``ETag``, ``LastModified``);
        FileNotFoundError when it is gone."""
        result: dict[str, Any] = self.bucket.call("head_object", Key=self.bucket.object_key(key))
        return result

    def size_of(self, key: str) -> int:
        """The object's size; FileNotFoundError when it is gone."""
        return int(self.head(key)["ContentLength"])

    def presigned_get(self, key: str, *, disposition: str, content_type: str, ttl: float) -> str:
        """A URL that GETs ``key`` for ``ttl`` seconds, answered with these headers (no request made)."""
        url: str = self.bucket.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket.name,
                "Key": self.bucket.object_key(key),
                "ResponseContentDisposition": disposition,
                "ResponseContentType": content_type,
            },
            ExpiresIn=int(ttl),
        )
        return url

    # ---- deletion and sweeping --------------------------------------------------------------

    def delete(self, key: str) -> None:
        self.bucket.call("delete_object", Key=self.bucket.object_key(key))

    def delete_outputs(self, job_id: str, attempt: int | None = None) -> None:
        prefix = f"outputs/{job_id}/" if attempt is None else f"outputs/{job_id}/{attempt}/"
        keys = [item["Key"] for item in self._list(prefix)]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
            self.bucket.call("delete_objects", Delete={"Objects": batch, "Quiet": True})

    def delete_job_files(self, job_id: str) -> None:
        """The outputs first, the upload last: an upload object left by a failure is what the
        orphan scan finds (and it deletes the outputs again with it)."""
        self.delete_outputs(job_id)
        self.delete(upload_key(job_id))

    def check(self) -> None:
        """A HEAD of the bucket: raises StorageUnavailable unless it is there and ours to use."""
        self.bucket.call("head_bucket")

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        token: dict[str, str] = {}
        while True:
            page = self.bucket.call("list_objects_v2", Prefix=self.bucket.object_key(prefix), **token)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def uploads_older_than(self, seconds: float) -> list[str]:
        cutoff = datetime.now(UTC).timestamp() - seconds
        start = len(self.bucket.object_key("uploads/"))
        return [
            item["Key"][start:]
            for item in self._list("uploads/")
            if item["LastModified"].timestamp() < cutoff and is_job_id(item["Key"][start:])
        ]

    def outputs_older_than(self, seconds: float) -> list[str]:
        """The job ids under ``outputs/`` whose newest object was written over ``seconds`` ago."""
        cutoff = datetime.now(UTC).timestamp() - seconds
        start = len(self.bucket.object_key("outputs/"))
        newest: dict[str, float] = {}
        for item in self._list("outputs/"):
            job_id = item["Key"][start:].split("/", 1)[0]
            written = item["LastModified"].timestamp()
            newest[job_id] = max(written, newest.get(job_id, written))
        return [job_id for job_id, written in newest.items() if written < cutoff and is_job_id(job_id)]

    def remove_stale_temp(self, max_age: float) -> int:
        """Abort the multipart uploads nothing was written to for ``max_age`` s (their API process
        died, or could not abort them), and remove this node's stale scratch directories.

        An upload's age is its newest of: its start (the job id in its key holds our clock's time;
        the store's ``Initiated`` too) and its parts' times, so a long upload still sending parts
        is never taken for a dead one."""
        cutoff = time.time() - max_age
        aborted = 0
        markers: dict[str, str] = {}
        while True:
            page = self.bucket.call(
                "list_multipart_uploads", Prefix=self.bucket.object_key("uploads/"), **markers
            )
            for upload in page.get("Uploads", []):
                if self._written_since(upload, cutoff) or self._resumable(upload["Key"]):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self.bucket.call("abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
            if not page.get("IsTruncated"):
                break
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
        return aborted + self.remove_stale_scratch(max_age)

    def _resumable(self, key: str) -> bool:
        """Whether the multipart upload to ``key`` is a resumable upload's (see :mod:`filejobs.tus.s3`)."""
        job_id = key.rsplit("/", 1)[-1]
        try:
            self.bucket.call("head_object", Key=self.bucket.object_key(RESUMABLE_MARKERS + job_id))
        except FileNotFoundError:
            return False
        return True

    def _written_since(self, upload: dict[str, Any], cutoff: float) -> bool:
        started = _id_time(upload["Key"].rsplit("/", 1)[-1])
        if upload["Initiated"].timestamp() >= cutoff or (started is not None and started >= cutoff):
            return True
        marker: dict[str, int] = {}
        while True:
            try:
                page = self.bucket.call(
                    "list_parts", Key=upload["Key"], UploadId=upload["UploadId"], **marker
                )
            except FileNotFoundError:
                return True  # completed or aborted meanwhile: nothing to do
            if any(part["LastModified"].timestamp() >= cutoff for part in page.get("Parts", [])):
                return True
            if not page.get("IsTruncated"):
                return False
            marker = {"PartNumberMarker": int(page["NextPartNumberMarker"])}

    def remove_stale_scratch(self, max_age: float) -> int:
        """Remove the scratch directories of this node's dead processes, and other nodes' older than
        ``max_age`` (:func:`filejobs.storage.remove_stale_scratch`)."""
        return remove_stale_scratch(self.scratch_root, max_age)


class _Stopped(Exception):
    """Raised into the transfer manager's read of a file to stop its upload."""


def _id_time(job_id: str) -> float | None:
    """When the job id ``job_id`` (a UUIDv7) was made, in Unix seconds; None for another name."""
    if not is_job_id(job_id):
        return None
    return (uuid.UUID(job_id).int >> 80) / 1000


class S3Workspace:
    """One attempt's scratch directory: ``input`` (fetched from the bucket) and ``out/``."""

    def __init__(self, storage: S3Storage, job_id: str, attempt: int) -> None:
        self.storage = storage
        self.job_id = job_id
        self.attempt = attempt
        self.root = storage.scratch_root / scratch_name(job_id, attempt)

    def __enter__(self) -> S3Workspace:
        shutil.rmtree(self.root, ignore_errors=True)  # a thread of ours that died with it
        self.root.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def fetch_input(self, key: str, keep_alive: Callable[[], None] | None = None) -> Path:
        target = self.root / "input"
        self.storage.download(key, target, keep_alive)
        return target

    def put_input(self, data: bytes, *, in_process: bool = False) -> Path:
        target = self.root / "input"
        target.write_bytes(data)
        return target

    def output_dir(self, *, create: bool = True) -> Path:
        path = self.root / "out"
        if create:
            path.mkdir(exist_ok=True)
        return path

    def save_output(self, path: Path, keep_alive: Callable[[], None] | None = None) -> str:
        """Upload ``path`` as ``outputs/<id>/<attempt>/<its path in out/>``; earlier attempts' go.
        ``keep_alive`` renews the job's lease while it goes up (it raises to stop)."""
        relative = path.resolve().relative_to(self.output_dir().resolve()).as_posix()
        self.storage.delete_outputs(self.job_id)
        key = f"outputs/{self.job_id}/{self.attempt}/{relative}"
        self.storage.upload_file(path, key, keep_alive)
        return key
