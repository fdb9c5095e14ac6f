"""A real S3 server for tests and scripts: moto's standalone server (``moto[server]``, a thread
of this process or a process of its own) on 127.0.0.1, and fresh buckets on it. Raises
:class:`Unavailable` where moto is not installed (``tests/conftest.py`` makes that a skip, or a
failure under ``FILEJOBS_REQUIRE_SERVICES=1``)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from filejobs.testing.ports import free_port
from filejobs.testing.services import Unavailable

#: moto takes any credentials; these are what the service's processes are given.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "filejobs-test",
    "AWS_SECRET_ACCESS_KEY": "filejobs-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Nothing from the developer's ~/.aws: the test's values only.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


#: Seconds a moto server process may take to listen.
START_TIMEOUT = 30.0


def require_moto() -> Any:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise Unavailable(f"moto[server] is not installed ({exc}): no S3 server to test against") from exc
    return ThreadedMotoServer


@dataclass
class S3Server:
    endpoint: str

    def stop_authenticating(self) -> None:
        """Take any credentials again (a server of :func:`s3_server_process`)."""
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf", timeout=10).raise_for_status()

    def client(self) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.endpoint)


@dataclass
class S3Bucket:
    """A test's bucket: ``url`` is FILEJOBS_STORAGE_URL (with a prefix), ``env`` what a process of
    the service needs to use it."""

    server: S3Server
    name: str
    prefix: str = "fj"
    client: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **CREDENTIALS,
            "FILEJOBS_STORAGE_URL": self.url,
            "FILEJOBS_S3_ENDPOINT_URL": self.server.endpoint,
        }

    @property
    def settings(self) -> dict[str, Any]:
        """Settings overrides (``make_settings(data_dir, **bucket.settings)``)."""
        return {"storage_url": self.url, "s3_endpoint_url": self.server.endpoint}

    def keys(self, under: str = "") -> list[str]:
        """The keys stored under ``prefix/under`` (relative to the prefix)."""
        start = len(self.prefix) + 1
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=f"{self.prefix}/{under}"
        ):
            found += [item["Key"][start:] for item in page.get("Contents", [])]
        return found

    def multipart_uploads(self) -> list[dict[str, Any]]:
        uploads: list[dict[str, Any]] = self.client.list_multipart_uploads(Bucket=self.name).get(
            "Uploads", []
        )
        return uploads

    def read(self, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=self.name, Key=f"{self.prefix}/{key}")["Body"].read()
        return data

    def remove(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=f"{self.prefix}/{key}")

    def drop(self) -> None:
        """Empty and delete the bucket (moto keeps everything in memory)."""
        for upload in self.multipart_uploads():
            self.client.abort_multipart_upload(
                Bucket=self.name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.name, Delete={"Objects": objects})
        self.client.delete_bucket(Bucket=self.name)


@contextmanager
def s3_server_process(log: Path, *, authenticate_after: int | None = None) -> Iterator[S3Server]:
    """``python -m moto.server`` in a process of its own on a free loopback port (its output in
    ``log``). ``authenticate_after=N``: after its first N requests, moto checks every request's
    signature against the access keys its IAM holds (none: every key is then a wrong one, answered
    ``403 InvalidAccessKeyId``) until :meth:`S3Server.stop_authenticating`."""
    require_moto()
    port = free_port()
    env = dict(os.environ)
    if authenticate_after is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(authenticate_after)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start (see {log})")
                time.sleep(0.1)
            yield S3Server(endpoint=f"http://127.0.0.1:{port}")
        finally:
            proc.kill()
            proc.wait(10)


@contextmanager
def s3_server() -> Iterator[S3Server]:
    server_class = require_moto()
    server = server_class(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(endpoint=f"http://{host}:{port}")
    finally:
        server.stop()


@contextmanager
def s3_bucket(server: S3Server) -> Iterator[S3Bucket]:
    client = server.client()
    name = f"fj-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    bucket = S3Bucket(server=server, name=name, client=client)
    try:
        yield bucket
    finally:
        bucket.drop()
