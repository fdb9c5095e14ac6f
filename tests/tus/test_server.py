"""The tus server at /v1/uploads: the protocol and its extensions, uploads becoming jobs, tenancy."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from filejobs import keys
from filejobs.jobs import repository
from filejobs.jobs.worker import LocalWorker
from filejobs.services import Services
from filejobs.tus import local
from filejobs.tus.local import owner_dir_name
from tests.conftest import files_under
from tests.metrics.helpers import Scrape
from tests.tus.helpers import CHUNK, TUS, checksum, create, created, head, is_problem, offset_of, patch

DATA = b"hello resumable world\n" * 2000


def job_count(services: Services) -> int:
    return len(repository.list_jobs(services.db, owner=None, limit=500)[0])


def upload_dir(services: Services, url: str, owner: str = "") -> Path:
    return services.settings.data_dir / "tus" / owner_dir_name(owner) / url.rsplit("/", 1)[1]


def test_options_advertises_version_size_and_extensions(client: TestClient, services: Services) -> None:
    response = client.options("/v1/uploads")
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0"
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.headers["tus-max-size"] == str(services.settings.max_upload_bytes)
    assert set(response.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
        "checksum",
    }
    assert {"sha1", "sha256"} <= set(response.headers["tus-checksum-algorithm"].split(","))


def test_an_upload_in_chunks_becomes_one_job_that_runs(
    client: TestClient, services: Services, worker: LocalWorker
) -> None:
    url = created(client, len(DATA), filename="notes.txt", processor="upper", params="{}")
    head_answer = head(client, url)
    assert head_answer.headers["upload-offset"] == "0"
    assert head_answer.headers["upload-length"] == str(len(DATA))
    assert head_answer.headers["cache-control"] == "no-store"
    assert "upload-expires" in head_answer.headers
    first = patch(client, url, 0, DATA[:10_000])
    assert first.status_code == 204, first.text
    assert first.headers["upload-offset"] == "10000"
    assert "filejobs-job" not in first.headers
    assert offset_of(client, url) == 10_000
    last = patch(client, url, 10_000, DATA[10_000:])
    assert last.status_code == 204, last.text
    assert last.headers["upload-offset"] == str(len(DATA))
    job_url = last.headers["filejobs-job"]
    assert head(client, url).headers["filejobs-job"] == job_url  # a client that lost the answer
    job = client.get(job_url).json()
    assert job["file"] == {
        "name": "notes.txt",
        "size": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "content_type": "text/plain",
    }
    assert job["processor"] == "upper"
    assert job_count(services) == 1
    assert worker.drain() == 1
    assert client.get(job_url).json()["status"] == "succeeded"
    assert client.get(f"{job_url}/result").content == DATA.upper()
    assert not (upload_dir(services, url) / "data").exists()  # the bytes live on as the job's only


def test_creation_with_upload_stores_the_body_and_can_finish_at_once(client: TestClient) -> None:
    response = client.post(
        "/v1/uploads",
        headers={**CHUNK, "Upload-Length": str(len(DATA))},
        content=DATA,
    )
    assert response.status_code == 201, response.text
    assert response.headers["upload-offset"] == str(len(DATA))
    assert response.headers["filejobs-job"].startswith("/v1/jobs/")
    partial = client.post(
        "/v1/uploads", headers={**CHUNK, "Upload-Length": str(len(DATA))}, content=DATA[:100]
    )
    assert partial.status_code == 201
    assert partial.headers["upload-offset"] == "100"
    assert offset_of(client, partial.headers["location"]) == 100


def test_a_refused_creation_with_upload_leaves_no_upload(client: TestClient, services: Services) -> None:
    """The client got no Location: nothing of an upload it cannot resume is kept."""
    response = client.post("/v1/uploads", headers={**CHUNK, "Upload-Length": "10"}, content=DATA[:20])
    assert is_problem(response, 413)
    assert "location" not in response.headers
    assert not [p for p in files_under(services.settings.data_dir) if "tus" in p.parts]
    refused = client.post(
        "/v1/uploads",
        headers={**CHUNK, "Upload-Length": "10", "Upload-Checksum": checksum("sha1", b"not these")},
        content=DATA[:10],
    )
    assert is_problem(refused, 460)
    assert not [p for p in files_under(services.settings.data_dir) if "tus" in p.parts]
    assert services.uploads.usage("").uploads == 0


def test_deferred_length_is_declared_by_a_later_patch(client: TestClient) -> None:
    url = created(client, None)
    answer = head(client, url)
    assert answer.headers["upload-defer-length"] == "1"
    assert "upload-length" not in answer.headers
    assert patch(client, url, 0, DATA[:500]).status_code == 204
    last = patch(client, url, 500, DATA[500:], {"Upload-Length": str(len(DATA))})
    assert last.status_code == 204, last.text
    assert "filejobs-job" in last.headers
    assert head(client, url).headers["upload-length"] == str(len(DATA))


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
def test_a_chunk_with_a_matching_checksum_is_stored(client: TestClient, algorithm: str) -> None:
    url = created(client, len(DATA))
    response = patch(client, url, 0, DATA, {"Upload-Checksum": checksum(algorithm, DATA)})
    assert response.status_code == 204, response.text
    assert "filejobs-job" in response.headers


def test_a_checksum_mismatch_is_460_and_the_chunk_is_discarded(
    client: TestClient, services: Services
) -> None:
    url = created(client, len(DATA))
    assert patch(client, url, 0, DATA[:1000]).status_code == 204
    wrong = patch(client, url, 1000, DATA[1000:2000], {"Upload-Checksum": checksum("sha1", b"other bytes")})
    assert is_problem(wrong, 460)
    assert offset_of(client, url) == 1000
    assert (upload_dir(services, url) / "data").read_bytes() == DATA[:1000]
    assert (
        patch(
            client, url, 1000, DATA[1000:], {"Upload-Checksum": checksum("sha256", DATA[1000:])}
        ).status_code
        == 204
    )
    job = client.get(head(client, url).headers["filejobs-job"]).json()
    assert job["file"]["sha256"] == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("crc32 AAAAAA==", "unsupported algorithm"),
        ("sha1 not-base64!", "not base64"),
        ("sha1 AAAA", "digest has"),
    ],
)
def test_a_bad_checksum_header_is_400(client: TestClient, value: str, why: str) -> None:
    url = created(client, len(DATA))
    response = patch(client, url, 0, DATA[:10], {"Upload-Checksum": value})
    assert is_problem(response, 400)
    assert why in response.json()["detail"]
    assert offset_of(client, url) == 0


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0.0, 0.2.2"])
def test_another_protocol_version_is_412_with_tus_version(client: TestClient, version: str | None) -> None:
    url = created(client, len(DATA))
    headers = {} if version is None else {"Tus-Resumable": version}
    for response in (
        client.post("/v1/uploads", headers={**headers, "Upload-Length": "10"}),
        client.patch(
            url,
            headers={**headers, "Content-Type": CHUNK["Content-Type"], "Upload-Offset": "0"},
            content=b"x",
        ),
        client.delete(url, headers=headers),
    ):
        assert is_problem(response, 412), response.text
        assert response.headers["tus-version"] == "1.0.0"
    head_answer = client.head(url, headers=headers)
    assert head_answer.status_code == 412
    assert head_answer.headers["tus-version"] == "1.0.0"
    assert offset_of(client, url) == 0


def test_a_patch_at_the_wrong_offset_is_409(client: TestClient) -> None:
    url = created(client, len(DATA))
    assert patch(client, url, 0, DATA[:100]).status_code == 204
    for offset in (0, 50, 200):
        response = patch(client, url, offset, DATA[offset : offset + 10])
        assert is_problem(response, 409)
        assert response.headers["upload-offset"] == "100"
    assert offset_of(client, url) == 100


def test_a_patch_without_or_with_a_bad_offset_is_400(client: TestClient) -> None:
    url = created(client, len(DATA))
    assert is_problem(client.patch(url, headers=CHUNK, content=b"abc"), 400)
    assert is_problem(patch(client, url, 0, b"abc", {"Upload-Offset": "-1"}), 400)
    assert is_problem(patch(client, url, 0, b"abc", {"Upload-Offset": "1e3"}), 400)


def test_a_patch_of_another_content_type_is_415(client: TestClient) -> None:
    url = created(client, len(DATA))
    response = client.patch(
        url, headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"}, content=b"abc"
    )
    assert is_problem(response, 415)
    assert offset_of(client, url) == 0


def test_a_chunk_past_the_declared_length_is_413_and_nothing_is_stored(
    client: TestClient, services: Services
) -> None:
    url = created(client, 1000)
    assert patch(client, url, 0, DATA[:400]).status_code == 204
    assert is_problem(patch(client, url, 400, DATA[:700]), 413)  # Content-Length: refused unread

    def chunked() -> Iterator[bytes]:  # no Content-Length: found out while it streams
        yield DATA[:300]
        yield DATA[:400]

    assert is_problem(patch(client, url, 400, chunked()), 413)
    assert offset_of(client, url) == 400
    assert (upload_dir(services, url) / "data").read_bytes() == DATA[:400]


@pytest.mark.parametrize(
    "value",
    [
        "filename !!notbase64",
        "filename aGk=,filename aGk=",
        "filename a b c",
        "filename aGk=,,x",
        "filename /w==,x",
    ],
)
def test_malformed_metadata_is_400_and_nothing_is_made(
    client: TestClient, services: Services, value: str
) -> None:
    response = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "10", "Upload-Metadata": value})
    assert is_problem(response, 400), response.text
    assert not [p for p in files_under(services.settings.data_dir) if "tus" in p.parts]


def test_creation_checks_length_processor_params_and_type_before_a_byte(
    client: TestClient, services: Services
) -> None:
    limit = services.settings.max_upload_bytes
    assert is_problem(create(client, limit + 1), 413)
    assert is_problem(create(client, 0), 422)
    assert is_problem(client.post("/v1/uploads", headers=TUS), 400)  # no length at all
    both = client.post("/v1/uploads", headers={**TUS, "Upload-Length": "5", "Upload-Defer-Length": "1"})
    assert is_problem(both, 400)
    assert is_problem(client.post("/v1/uploads", headers={**TUS, "Upload-Defer-Length": "2"}), 400)
    unknown = create(client, 10, processor="no-such")
    assert is_problem(unknown, 422)
    assert "upper" in unknown.json()["processors"]
    assert is_problem(create(client, 10, processor="sleep", params='{"seconds": "long"}'), 422)
    assert is_problem(create(client, 10, params="[1, 2]"), 422)
    refused = create(client, 10, processor="text-only", filetype="image/png")
    assert is_problem(refused, 415)
    assert refused.json()["accepts"] == ["text/plain"]
    assert is_problem(create(client, 10, idempotency_key="\x01bad"), 400)
    assert not [p for p in files_under(services.settings.data_dir) if "tus" in p.parts]


def test_the_sniffed_type_is_checked_again_when_complete(client: TestClient, services: Services) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    url = created(client, len(png), processor="text-only", filetype="text/plain")
    response = patch(client, url, 0, png)
    assert is_problem(response, 415)
    assert head(client, url).status_code == 404  # refused for good: removed
    assert job_count(services) == 0
    assert not files_under(services.settings.data_dir / "uploads")
    assert not [p for p in files_under(services.settings.data_dir) if "tus" in p.parts]


def test_a_finished_upload_takes_no_more_patches(client: TestClient, services: Services) -> None:
    url = created(client, len(DATA))
    job_url = patch(client, url, 0, DATA).headers["filejobs-job"]
    for offset, data in ((len(DATA), b""), (len(DATA), b"more"), (0, DATA)):
        again = patch(client, url, offset, data)
        assert is_problem(again, 410)
        assert again.headers["filejobs-job"] == job_url
    assert job_count(services) == 1


def test_termination_removes_the_upload_at_once(client: TestClient, services: Services) -> None:
    url = created(client, len(DATA))
    assert patch(client, url, 0, DATA[:100]).status_code == 204
    deleted = client.delete(url, headers=TUS)
    assert deleted.status_code == 204
    assert deleted.headers["tus-resumable"] == "1.0.0"
    assert not upload_dir(services, url).exists()
    assert is_problem(patch(client, url, 100, DATA[100:200]), 404)
    assert head(client, url).status_code == 404
    assert is_problem(client.delete(url, headers=TUS), 404)


def test_unknown_and_malformed_upload_ids_are_404(client: TestClient) -> None:
    for url in ("/v1/uploads/" + "0" * 32, "/v1/uploads/..%2F..%2Fetc", "/v1/uploads/x"):
        assert head(client, url).status_code == 404
        assert is_problem(patch(client, url, 0, b"x"), 404)


def test_another_keys_upload_is_404(client: TestClient, services: Services) -> None:
    alice = {"Authorization": f"Bearer {keys.create_key(services.db, 'alice')[1]}"}
    bob = {"Authorization": f"Bearer {keys.create_key(services.db, 'bob')[1]}"}
    url = created(client, len(DATA), headers=alice)
    assert patch(client, url, 0, DATA[:100], alice).status_code == 204
    assert head(client, url, bob).status_code == 404
    assert is_problem(patch(client, url, 100, DATA[100:], bob), 404)
    assert is_problem(client.delete(url, headers={**TUS, **bob}), 404)
    assert head(client, url).status_code == 401  # no key at all
    assert offset_of(client, url, alice) == 100
    done = patch(client, url, 100, DATA[100:], alice)
    assert done.status_code == 204
    assert client.get(done.headers["filejobs-job"], headers=bob).status_code == 404


# ---- exactly one job ------------------------------------------------------------------------


def test_a_completion_that_died_after_the_row_finds_its_job(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies (here: the upload's 'done' record fails) after the job's row committed:
    the next try at the last offset finds that job instead of making a second one."""
    from filejobs.tus.local import LocalUpload

    real_finish = LocalUpload.finish
    calls = []

    def dying_finish(self: LocalUpload, expires_at: float) -> None:
        calls.append(expires_at)
        if len(calls) == 1:
            raise OSError(5, "I/O error")
        real_finish(self, expires_at)

    monkeypatch.setattr(LocalUpload, "finish", dying_finish)
    url = created(client, len(DATA))
    assert patch(client, url, 0, DATA).status_code == 500
    assert job_count(services) == 1
    assert offset_of(client, url) == len(DATA)
    assert "filejobs-job" not in head(client, url).headers
    retry = patch(client, url, len(DATA), b"")
    assert retry.status_code == 204, retry.text
    assert job_count(services) == 1
    job = client.get(retry.headers["filejobs-job"]).json()
    assert job["file"]["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert head(client, url).headers["filejobs-job"] == retry.headers["filejobs-job"]


def test_the_same_idempotency_key_makes_one_job_from_two_uploads(
    client: TestClient, services: Services
) -> None:
    first = created(client, len(DATA), filename="a.txt", idempotency_key="batch-1")
    second = created(client, len(DATA), filename="a.txt", idempotency_key="batch-1")
    one = patch(client, first, 0, DATA).headers["filejobs-job"]
    two = patch(client, second, 0, DATA)
    assert two.status_code == 204
    assert two.headers["filejobs-job"] == one
    assert job_count(services) == 1
    other = created(client, 5, filename="b.txt", idempotency_key="batch-1")
    assert is_problem(patch(client, other, 0, b"other"), 422)  # the key, for another file


def test_bytes_past_the_recorded_offset_are_cut_off_on_resume(client: TestClient, services: Services) -> None:
    """A server killed after writing but before recording bytes: they are not counted, and the
    resumed upload overwrites them."""
    url = created(client, len(DATA))
    assert patch(client, url, 0, DATA[:1000]).status_code == 204
    with open(upload_dir(services, url) / "data", "ab") as handle:
        handle.write(b"garbage never acknowledged")
    assert offset_of(client, url) == 1000
    done = patch(client, url, 1000, DATA[1000:])
    assert done.status_code == 204
    assert (
        client.get(done.headers["filejobs-job"]).json()["file"]["sha256"] == hashlib.sha256(DATA).hexdigest()
    )


def test_the_state_record_counts_only_acknowledged_bytes(client: TestClient, services: Services) -> None:
    url = created(client, len(DATA))
    assert patch(client, url, 0, DATA[:1234]).status_code == 204
    record = json.loads((upload_dir(services, url) / "info.json").read_text())
    assert local.recorded_offset(upload_dir(services, url)) == 1234
    assert record["length"] == len(DATA)
    assert record["job_id"] is None


def test_resumable_uploads_are_counted(client: TestClient) -> None:
    def scrape() -> Scrape:
        return Scrape(client.get("/metrics").text)

    before = scrape()
    url = created(client, len(DATA))
    assert patch(client, url, 0, DATA[:1000]).status_code == 204
    assert patch(client, url, 1000, DATA[1000:]).status_code == 204
    gone = created(client, 10)
    assert client.delete(gone, headers=TUS).status_code == 204
    delta = scrape() - before
    assert delta.value("filejobs_resumable_uploads_total", event="created") == 2
    assert delta.value("filejobs_resumable_uploads_total", event="completed") == 1
    assert delta.value("filejobs_resumable_uploads_total", event="terminated") == 1
    assert delta.value("filejobs_resumable_uploads_total", event="refused") == 0
    assert delta.value("filejobs_resumable_bytes_total") == len(DATA)
