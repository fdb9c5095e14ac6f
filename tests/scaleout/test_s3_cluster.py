"""Scale-out on object storage: the API and two Celery workers share only the bucket, the
database and the broker (each has a data directory of its own). Jobs read their input from the
bucket and store their outputs there; a worker killed mid-job leaves the job to the other, which
reads the same object; a worker's scratch is gone when its jobs are."""

from __future__ import annotations

from pathlib import Path

import pytest

from filejobs.object_storage import S3Storage
from filejobs.settings import Settings
from filejobs.testing import Cluster, submit
from filejobs.testing.s3 import S3Bucket
from tests.scaleout.conftest import Record
from tests.scaleout.test_workers import kill_the_worker_running_a_job

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e]


def scratch_files(cluster: Cluster) -> list[Path]:
    return [path for path in cluster.root.glob("*-data/scratch/**/*") if path.is_file()]


def test_api_and_workers_share_only_the_bucket(s3_cluster: Cluster, s3_bucket: S3Bucket) -> None:
    first, second = s3_cluster.worker(1), s3_cluster.worker(1)
    api = s3_cluster.api()
    s3_cluster.workers_ready(first, second)
    with api.client() as client:
        ids = [
            submit(client, f"file {i}\n".encode(), name=f"f{i}.txt", processor="upper")["id"]
            for i in range(6)
        ]
        rows = s3_cluster.wait_jobs(ids, timeout=60)
        assert {job.status for job in rows.values()} == {"succeeded"}, rows
        for i, job_id in enumerate(ids):
            result = client.get(f"/v1/jobs/{job_id}/result")
            assert result.status_code == 200
            assert result.content == f"FILE {i}\n".encode()
            assert f"outputs/{job_id}/1/upper.txt" in s3_bucket.keys("outputs/")
    assert {f"uploads/{job_id}" for job_id in ids} <= set(s3_bucket.keys("uploads/"))
    workers_ran = {worker for *_, worker in s3_cluster.running_lines()}
    assert workers_ran == {first.name, second.name}, workers_ran
    # Nothing of a job's files stayed on any process's disk.
    assert scratch_files(s3_cluster) == []
    assert not list(s3_cluster.root.glob("*-data/uploads/*"))
    assert not list(s3_cluster.root.glob("*-data/outputs/*"))


def test_kill9_worker_tree_running_a_job_on_s3(
    s3_cluster: Cluster, s3_bucket: S3Bucket, record: Record
) -> None:
    """The other worker runs the job again from the same object; the dead one's scratch (its copy
    of the input) is on its own disk only, and the next process of that node removes it."""
    kill_the_worker_running_a_job(s3_cluster, record, lambda victim: victim.kill9_tree())
    dead = [worker for worker in s3_cluster.workers if worker.returncode is not None]
    assert len(dead) == 1
    leftovers = [path for path in scratch_files(s3_cluster) if path.is_relative_to(dead[0].data_dir)]
    assert [path.name for path in leftovers] == ["input"]
    settings = Settings(data_dir=dead[0].data_dir, **s3_bucket.settings)
    assert S3Storage.from_settings(settings).remove_stale_scratch(3600) == 1
    assert scratch_files(s3_cluster) == []
