"""Compare the S3 client libraries filejobs could use, against moto's S3 server on this machine:
``python -m scripts.s3_clients [--mib 256]`` (needs ``moto[server]`` and ``obstore``: the latter
only for this comparison, ``pip install obstore``).

Prints, for boto3 (the one filejobs uses) and obstore: a large put and get, and 1 KiB puts per
second one at a time and concurrently. The choice is explained in docs/operations.md (Scaling out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BUCKET = "client-compare"
SMALL_PUTS = 300


def timed(name: str, work: Callable[[], object], amount: float, unit: str) -> None:
    started = time.perf_counter()
    work()
    took = time.perf_counter() - started
    print(f"{name:40s} {took:6.2f} s  {amount / took:8.1f} {unit}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256, help="size of the large object")
    args = parser.parse_args()
    import boto3
    import obstore
    from moto.server import ThreadedMotoServer
    from obstore.store import S3Store

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = {"aws_access_key_id": "compare", "aws_secret_access_key": "compare", "region_name": "us-east-1"}
    s3: Any = boto3.session.Session(**keys).client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        allow_http=True,
        access_key_id="compare",
        secret_access_key="compare",
        region="us-east-1",
    )
    size = args.mib * 1024 * 1024
    small = os.urandom(1024)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "large.bin"
        with open(path, "wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(1024 * 1024))
        mb = size / 1e6
        timed(f"boto3 upload_file {args.mib} MiB", lambda: s3.upload_file(str(path), BUCKET, "b"), mb, "MB/s")
        timed(f"obstore put {args.mib} MiB", lambda: obstore.put(store, "o", path), mb, "MB/s")

        def boto3_get() -> None:
            body = s3.get_object(Bucket=BUCKET, Key="b")["Body"]
            for _ in body.iter_chunks(1024 * 1024):
                pass

        def obstore_get() -> None:
            for _ in obstore.get(store, "o"):
                pass

        timed(f"boto3 get_object {args.mib} MiB", boto3_get, mb, "MB/s")
        timed(f"obstore get {args.mib} MiB", obstore_get, mb, "MB/s")

    def boto3_serial() -> None:
        for i in range(SMALL_PUTS):
            s3.put_object(Bucket=BUCKET, Key=f"s/{i}", Body=small)

    def obstore_serial() -> None:
        for i in range(SMALL_PUTS):
            obstore.put(store, f"o/{i}", small)

    def boto3_threads() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=f"t/{i}", Body=small), range(SMALL_PUTS))
            )

    async def obstore_async() -> None:
        await asyncio.gather(*(obstore.put_async(store, f"a/{i}", small) for i in range(SMALL_PUTS)))

    timed("boto3 1 KiB puts, one at a time", boto3_serial, SMALL_PUTS, "puts/s")
    timed("obstore 1 KiB puts, one at a time", obstore_serial, SMALL_PUTS, "puts/s")
    timed("boto3 1 KiB puts, 8 threads", boto3_threads, SMALL_PUTS, "puts/s")
    timed("obstore 1 KiB puts, put_async x300", lambda: asyncio.run(obstore_async()), SMALL_PUTS, "puts/s")
    server.stop()


if __name__ == "__main__":
    main()
