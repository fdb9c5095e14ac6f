"""The boto3 client of a bucket: every request goes through :meth:`Bucket.call`, which counts it
(``filejobs_storage_operations``/``_errors``, and how long it took:
``filejobs_storage_operation_duration_seconds``) and turns its failure into what the service knows:
:class:`FileNotFoundError` for an object (or multipart upload) that is not there,
:class:`~filejobs.storage.StorageUnavailable` for a store that cannot be reached or refuses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from filejobs import metrics
from filejobs.storage import StorageUnavailable

#: Connections one process keeps to the store (parts in flight, downloads, deletes of all threads).
POOL_CONNECTIONS = 32
NOT_FOUND_CODES = {"NoSuchKey", "NoSuchUpload", "NotFound", "404"}
DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}


@dataclass(frozen=True)
class Location:
    """``s3://bucket/prefix``: the bucket, and the prefix every key is stored under ("" or "a/b/")."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"FILEJOBS_STORAGE_URL {url!r}: expected s3://bucket or s3://bucket/prefix.")
        prefix = parts.path.strip("/")
        return cls(bucket=parts.netloc, prefix=f"{prefix}/" if prefix else "")


def error_kind(exc: BaseException, operation: str) -> str:
    """not_found, no_bucket, denied, unreachable, server or other."""
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    cause = exc.__cause__ or exc.__context__
    if not isinstance(exc, ClientError) and isinstance(cause, ClientError):
        exc = cause  # boto3's transfer manager wraps the request's error (S3UploadFailedError)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket" or (operation == "head_bucket" and status == 404):
            return "no_bucket"
        if code in NOT_FOUND_CODES or status == 404:
            return "not_found"
        if code in DENIED_CODES or status == 403:
            return "denied"
        if status >= 500:
            return "server"
        return "other"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return "denied"
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return "unreachable"
    return "other"


#: glibc's ``mallopt`` parameter for the size from which an allocation gets its own mapping.
M_MMAP_THRESHOLD = -3
#: Allocations from this size on are mapped, and unmapped when freed (glibc's starting value).
MMAP_THRESHOLD = 2 * 1024 * 1024
_threshold_fixed = False


def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at 2 MiB in a process that streams to S3 (once per process;
    False where libc has no ``mallopt``).

    glibc raises the threshold (up to 32 MiB) each time a mapped block is freed; after the first
    parts of an upload, the request's chunks and botocore's 1 MiB reads (checksum, payload hash)
    come from the heap instead, where what is freed by one thread stays in its arena and RSS keeps
    8-20 MB more than the bytes in flight (measured: docs/performance.md, "Object storage"). At a
    fixed threshold the parts are mapped and returned when freed. Not lower: at 128 KiB every
    chunk and every 1 MiB read was a fresh mapping (page faults and zeroing) and an upload went at
    half the speed (51 against 91 MB/s to moto, docs/performance.md). (Measured while botocore still
    read each part for its checksum and payload hash; it no longer does, see :func:`s3_options` and
    :func:`filejobs.object_storage.sink.crc32`, but downloads still read the bucket in 1 MiB chunks.)"""
    global _threshold_fixed
    if _threshold_fixed:
        return True
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _threshold_fixed = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _threshold_fixed


#: botocore's data loader, shared by every client of this process (see :func:`_loader`).
_LOADER: Any = None


def _loader() -> Any:
    """One botocore data loader for the process: it keeps what it parsed (S3's service model, its
    endpoint rules, the partitions: about 13 MB of Python objects), so a second client (``serve``
    checks the bucket with one before the app makes its own; tests make many) costs 0.5 MB, not 13."""
    global _LOADER
    if _LOADER is None:
        from botocore.loaders import create_loader

        _LOADER = create_loader()
    return _LOADER


def s3_options(endpoint_url: str | None, *, sign_payload: bool = False) -> dict[str, Any]:
    """botocore's ``s3`` options for the client.

    Path-style addressing for a custom endpoint (MinIO and moto serve no bucket subdomains).
    No SHA-256 of the payload in the signature: botocore leaves it out over https when the request
    carries a checksum, but over plain http it hashes every part once more (a full pass over every
    upload, a fifth of the API process's CPU per byte sent). The body's integrity is the
    ``x-amz-checksum-crc32`` header each part and PUT carries (a signed header, checked by the
    store), as over https; the headers, the key, the upload and part numbers stay signed.
    ``sign_payload`` (``S3_SIGN_PAYLOAD``) keeps botocore's own choice: the SHA-256 signed over
    plain http, where a CRC32 cannot stop someone who rewrites the traffic."""
    options: dict[str, Any] = {} if sign_payload else {"payload_signing_enabled": False}
    if endpoint_url:
        options["addressing_style"] = "path"
    return options


def make_client(endpoint_url: str | None, timeout: float, *, sign_payload: bool = False) -> Any:
    """A thread-safe S3 client: standard retries, bounded timeouts and connection pool. Each
    client has a session of its own (credentials are looked up afresh), all share one loader."""
    import boto3
    import botocore.session
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=POOL_CONNECTIONS,
        s3=s3_options(endpoint_url, sign_payload=sign_payload),
    )
    core = botocore.session.get_session()
    loader = _loader()
    core.register_component("data_loader", loader)
    session = boto3.session.Session(botocore_session=core)
    # boto3 adds its own data directory to the loader's search path for each session: once is enough.
    loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))
    return session.client("s3", endpoint_url=endpoint_url or None, config=config)


class Bucket:
    """One bucket through one client (thread-safe: boto3 clients are)."""

    def __init__(self, location: Location, client: Any, endpoint_url: str | None = None) -> None:
        self.location = location
        self.name = location.bucket
        self.client = client
        self.endpoint_url = endpoint_url

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"bucket {self.name!r}{where}"

    def object_key(self, key: str) -> str:
        return self.location.prefix + key

    def call(self, operation: str, /, **kwargs: Any) -> Any:
        """``client.<operation>(Bucket=..., **kwargs)``, counted, its errors translated."""
        started = time.perf_counter()
        try:
            result = getattr(self.client, operation)(Bucket=self.name, **kwargs)
        except Exception as exc:
            kind = error_kind(exc, operation)
            metrics.storage_call(operation, kind, time.perf_counter() - started)
            if kind == "not_found":
                raise FileNotFoundError(kwargs.get("Key", operation)) from exc
            if kind == "other":
                raise
            raise StorageUnavailable(f"{self.describe()}: {kind}: {_first_line(exc)}") from exc
        metrics.storage_call(operation, seconds=time.perf_counter() - started)
        return result


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
