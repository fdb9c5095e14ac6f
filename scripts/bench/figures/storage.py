"""The S3 backend (``FILEJOBS_STORAGE_URL=s3://…``) against an S3 server on this machine (moto's
standalone server, ``moto[server]``, in a process of its own; every upload is sent through the
loopback). Four figures:

* 1 GiB upload through filejobs into the bucket vs the same bytes put by boto3's own transfer
  manager (``upload_file``, its defaults: 8 MiB parts, 10 threads) to the same server; target
  >= 0.8x;
* the API process's peak RSS during a 64 MiB and a 1 GiB upload; target <= 150 MB, flat;
* last byte -> 202 of the 1 GiB upload (the last part and CompleteMultipartUpload), and the same
  less the Complete as filejobs timed it (``/metrics``): moto's Complete concatenates the whole
  object in Python (seconds for 1 GiB), so only filejobs' own share can be judged; target <= 200 ms;
* 1 KiB uploads/s at 16 connections (wrk) on S3 vs on the local backend, same run (no target).

The server holds what it is sent in memory: each object is deleted once measured.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from filejobs.settings import Settings
from filejobs.testing.s3 import s3_server_process
from scripts.bench.common import MB, Body, Context, MiB, RssSampler, filejobs_server
from scripts.bench.figures.filejobs_load import filejobs_env, median
from scripts.bench.figures.small_uploads import post_small
from scripts.bench.report import Figure

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "filejobs-bench",
    "AWS_SECRET_ACCESS_KEY": "filejobs-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
BUCKET = "filejobs-bench"
OPERATIONS = "filejobs_storage_operations_total"
DURATION_SUM = "filejobs_storage_operation_duration_seconds_sum"
#: Requests the API process makes on its own (the sweeper, /readyz), not for an upload.
BACKGROUND = {"list_multipart_uploads", "list_objects_v2", "list_parts", "head_bucket"}


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """``python -m moto.server`` on a free loopback port; yields its endpoint URL."""
    with s3_server_process(log) as server:
        yield server.endpoint


#: What the filejobs server runs with: the settings' defaults.
PART_SIZE = Settings.model_fields["s3_part_size"].default
IN_FLIGHT = Settings.model_fields["s3_parts_in_flight"].default


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=endpoint)


def s3_env(endpoint: str, max_bytes: int) -> dict[str, str]:
    return filejobs_env(
        **CREDENTIALS,
        FILEJOBS_STORAGE_URL=f"s3://{BUCKET}/filejobs",
        FILEJOBS_S3_ENDPOINT_URL=endpoint,
        FILEJOBS_WORKERS="0",
        FILEJOBS_MAX_UPLOAD_BYTES=str(max_bytes + MiB),
    )


def upload_through(base_url: str, size: int) -> tuple[float, float, str]:
    """POST ``size`` bytes to filejobs, streamed; (MB/s first byte -> 202, last byte -> 202 ms, id)."""
    body = Body(os.urandom(MiB), size // MiB)
    with httpx.Client(base_url=base_url, timeout=600) as client:
        response = client.post("/v1/jobs", content=iter(body), headers=body.headers)
    answered = time.perf_counter()
    if response.status_code != 202:
        raise RuntimeError(f"filejobs upload: HTTP {response.status_code}: {response.text[:300]}")
    assert body.first_byte is not None
    assert body.last_byte is not None
    job_id: str = response.json()["id"]
    if response.json()["file"]["size"] != size:
        raise RuntimeError("filejobs stored a different size")
    return size / (answered - body.first_byte) / MB, (answered - body.last_byte) * 1000, job_id


def storage_counts(base_url: str) -> dict[str, float]:
    """From the server's ``/metrics``: requests made to the store by operation (``<op>``) and the
    seconds they took (``<op>:seconds``)."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{base_url}/metrics", timeout=30).text.splitlines():
        for metric, suffix in ((OPERATIONS, ""), (DURATION_SUM, ":seconds")):
            if line.startswith(metric + "{"):
                labels, value = line[len(metric) :].rsplit(" ", 1)
                operation = labels.split('operation="', 1)[1].split('"', 1)[0]
                found[operation + suffix] = found.get(operation + suffix, 0.0) + float(value)
    return found


def upload_requests(before: dict[str, float], after: dict[str, float]) -> tuple[dict[str, int], float]:
    """The requests one upload made (by operation) and the seconds its CompleteMultipartUpload took."""
    made = {
        name: round(after[name] - before.get(name, 0.0))
        for name in after
        if ":" not in name and after[name] != before.get(name, 0.0)
    }
    complete = "complete_multipart_upload:seconds"
    return made, after.get(complete, 0.0) - before.get(complete, 0.0)


def check_requests(made: dict[str, int], size: int, part_size: int) -> None:
    """An upload of ``size`` bytes makes its multipart upload, one request per part and the
    Complete: nothing else (no HEAD after the Complete, no second round trip). The sweeper's
    listings and /readyz's HEAD of the bucket, made meanwhile by the same process, are left out."""
    made = {name: count for name, count in made.items() if name not in BACKGROUND}
    most = -(-size // part_size)  # a part is sent once at least part_size bytes are there
    once = made.get("create_multipart_upload") == made.get("complete_multipart_upload") == 1
    if set(made) != {"create_multipart_upload", "upload_part", "complete_multipart_upload"} or not once:
        raise RuntimeError(f"a {size} B upload made {made}: expected one multipart upload and nothing else")
    if not 1 <= made["upload_part"] <= most:
        raise RuntimeError(f"a {size} B upload made {made['upload_part']} parts, at most {most} expected")


def delete_job(base_url: str, job_id: str) -> None:
    response = httpx.delete(f"{base_url}/v1/jobs/{job_id}", timeout=60)
    if response.status_code != 204:
        raise RuntimeError(f"DELETE {job_id}: HTTP {response.status_code}")


def transfer_manager(client: Any, path: Path) -> tuple[float, float]:
    """boto3 ``upload_file`` of ``path`` (its transfer manager, default config): MB/s, and the ms
    its CompleteMultipartUpload took (the server's share of any last byte -> 202)."""
    complete = client.complete_multipart_upload
    took_ms: list[float] = []

    def timed(**kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return complete(**kwargs)
        finally:
            took_ms.append((time.perf_counter() - started) * 1000)

    client.complete_multipart_upload = timed
    try:
        started = time.perf_counter()
        client.upload_file(str(path), BUCKET, "baseline/upload")
        took = time.perf_counter() - started
    finally:
        client.complete_multipart_upload = complete
    client.delete_object(Bucket=BUCKET, Key="baseline/upload")
    return path.stat().st_size / took / MB, sum(took_ms)


def run(ctx: Context) -> list[Figure]:
    large = (16 if ctx.smoke else 1024) * MiB
    medium = (8 if ctx.smoke else 64) * MiB
    seconds = 2 if ctx.smoke else 8
    root = ctx.subdir("storage")
    with moto_server(root / "moto.log") as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        ctx.say(f"   S3 server (moto) at {endpoint}")
        with tempfile.NamedTemporaryFile(dir=root, prefix="baseline-", suffix=".bin") as handle:
            block = os.urandom(MiB)
            for _ in range(large // MiB):
                handle.write(block)
            handle.flush()
            baseline_file = Path(handle.name)
            server = filejobs_server(root / "filejobs-s3", s3_env(endpoint, large))
            fj_mbps: list[float] = []
            tm_mbps: list[float] = []
            tm_complete: list[float] = []
            tails: list[float] = []
            own_tails: list[float] = []
            peaks: dict[int, list[int]] = {medium: [], large: []}
            with server:
                upload_through(server.base_url, MiB)  # warm up: imports, the client's pool
                for round_no in range(ctx.rounds):
                    for size in (medium, large):
                        counted = storage_counts(server.base_url)
                        with RssSampler(server.pid) as rss:
                            mbps, tail, job_id = upload_through(server.base_url, size)
                        peaks[size].append(rss.peak)
                        made, complete_s = upload_requests(counted, storage_counts(server.base_url))
                        check_requests(made, size, PART_SIZE)
                        delete_job(server.base_url, job_id)
                        if size == large:
                            fj_mbps.append(mbps)
                            tails.append(tail)
                            own_tails.append(tail - complete_s * 1000)
                    mbps, complete_ms = transfer_manager(client, baseline_file)
                    tm_mbps.append(mbps)
                    tm_complete.append(complete_ms)
                    ctx.say(
                        f"   round {round_no + 1}: filejobs {fj_mbps[-1]:.0f} MB/s (last byte -> 202 "
                        f"{tails[-1]:.0f} ms, {own_tails[-1]:.0f} ms without its Complete, peak RSS "
                        f"{peaks[large][-1] / MB:.0f} MB), boto3 upload_file "
                        f"{tm_mbps[-1]:.0f} MB/s (its CompleteMultipartUpload {complete_ms:.0f} ms)"
                    )
                s3_rps = [post_small(server.base_url, "/v1/jobs", seconds).rps for _ in range(ctx.rounds)]
        local = filejobs_server(root / "filejobs-local", filejobs_env(FILEJOBS_WORKERS="0"))
        with local:
            post_small(local.base_url, "/v1/jobs", 1)
            local_rps = [post_small(local.base_url, "/v1/jobs", seconds).rps for _ in range(ctx.rounds)]
    return figures(
        ctx, large, medium, fj_mbps, tm_mbps, tails, own_tails, tm_complete, peaks, s3_rps, local_rps
    )


def figures(
    ctx: Context,
    large: int,
    medium: int,
    fj_mbps: list[float],
    tm_mbps: list[float],
    tails: list[float],
    own_tails: list[float],
    tm_complete: list[float],
    peaks: dict[int, list[int]],
    s3_rps: list[float],
    local_rps: list[float],
) -> list[Figure]:
    label = f"{large // MiB} MiB" if large < 1024 * MiB else f"{large // (1024 * MiB)} GiB"
    fj, tm = median(fj_mbps), median(tm_mbps)
    peak_large, peak_medium = median(peaks[large]) / MB, median(peaks[medium]) / MB
    tail, own_tail = median(tails), median(own_tails)
    judge = not ctx.smoke
    return [
        Figure(
            key="s3_upload_mbps",
            label=f"{label} upload to S3",
            unit="MB/s",
            value=fj,
            baselines={"boto3 upload_file": tm},
            target=">= 0.8x boto3 upload_file",
            met=(fj >= 0.8 * tm) if judge else None,
            note="moto's S3 server (Python, CPU-bound) on this machine; filejobs: first byte -> 202 "
            f"(parts of {PART_SIZE // MiB} MiB, {IN_FLIGHT} in flight, as the issue bounds them); boto3: its "
            "transfer manager's defaults (8 MiB parts, 10 threads) from a file",
        ),
        Figure(
            key="s3_upload_peak_rss_mb",
            label=f"API peak RSS, {label} to S3",
            unit="MB",
            value=peak_large,
            baselines={f"{medium // MiB} MiB upload": peak_medium},
            target="<= 150 MB, flat from 64 MiB",
            met=(peak_large <= 150 and peak_large - peak_medium <= 16) if judge else None,
        ),
        Figure(
            key="s3_last_byte_to_202_ms",
            label=f"last byte -> 202, {label} to S3",
            unit="ms",
            value=tail,
            baselines={"the server's CompleteMultipartUpload (boto3)": median(tm_complete)},
            note="the parts still in flight, the last part, CompleteMultipartUpload, the row; moto's "
            "Complete concatenates the object in Python: see the next figure for filejobs' share",
        ),
        Figure(
            key="s3_last_byte_to_202_own_ms",
            label=f"last byte -> 202 less the server's Complete, {label} to S3",
            unit="ms",
            value=own_tail,
            target="<= 200 ms",
            met=(own_tail <= 200) if judge else None,
            note="the same uploads' last byte -> 202 minus their CompleteMultipartUpload as filejobs timed "
            "it (filejobs_storage_operation_duration_seconds in /metrics); each upload made its "
            "multipart upload, its parts and the Complete, no other request (checked)",
        ),
        Figure(
            key="s3_small_upload_rps",
            label="1 KiB uploads/s on S3, 16 connections",
            unit="req/s",
            value=median(s3_rps),
            baselines={"local backend": median(local_rps)},
            note="wrk -t1 -c16; each 202 after a PUT to the S3 server (S3) or an fsync (local)",
        ),
    ]
