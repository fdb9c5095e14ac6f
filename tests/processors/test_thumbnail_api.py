"""The ``thumbnail`` processor through the API (upload, worker, result) and in a real worker child."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from filejobs.app import create_app
from filejobs.jobs.dispatch import InMemoryDispatcher
from filejobs.settings import MiB
from filejobs.testing import post_file, submit
from scripts.image_memory import lossless_webp, measure, png16_rgba
from tests.conftest import burst_worker, make_settings
from tests.processors.images import (
    corner_colours,
    cornered,
    encode,
    is_red,
    noise,
    png_bomb,
    with_orientation,
)

# ---- in the worker's child process (scripts/image_memory.py's measure: a fresh child each) ---


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for peak memory")
def test_a_zip_bomb_leaves_the_child_small_and_fast(tmp_path: Path) -> None:
    """20000 x 20000 in 48 KB: decoding it would take ~800 MB and seconds; refused from its header."""
    source = tmp_path / "bomb.png"
    source.write_bytes(png_bomb(20_000, 20_000, rows=20_000))
    assert source.stat().st_size < 100_000
    outcome, seconds, figures = measure(source, limit=0)
    assert seconds < 5
    assert outcome.kind == "error"
    assert outcome.failed.code == "image_too_large"
    assert str(tmp_path) not in outcome.failed.message
    assert figures["peak_rss"] < 200 * MiB  # read while the child still runs: it was not replaced


# Hostile files just under the pixel limit, built as scripts/image_memory.py builds them (smaller:
# 4000 x 4000, under a job memory limit made smaller to match). The worker child maps about
# 200 MiB before a job; decoding the WebP takes 16 bytes a pixel (244 MiB), the 16-bit RGBA PNG 8.
LIMITED = 384 * MiB


def thumbnail_under(data_dir: Path, limit: int, content: bytes, name: str) -> dict[str, Any]:
    """Run a thumbnail job through the API and the worker under a memory limit; the job's body."""
    settings = make_settings(data_dir, job_memory_limit=limit)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        return finished(
            client,
            client.app_state["services"],
            submit(client, content, name=name, processor="thumbnail")["id"],
        )


@pytest.mark.parametrize(("side", "fits"), [(4000, False), (2000, True)])
def test_a_lossless_webp_is_refused_by_what_decoding_it_takes(data_dir: Path, side: int, fits: bool) -> None:
    path = data_dir.parent / "big.webp"
    lossless_webp(path, side)
    job = thumbnail_under(data_dir, LIMITED, path.read_bytes(), "big.webp")
    if fits:  # what the estimate admits decodes within the limit
        assert job["status"] == "succeeded", job["error"]
        return
    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert job["error"]["code"] == "image_too_large"
    assert f"Decoding the image ({side}x{side}) would take about 244 MiB" in job["error"]["message"]


@pytest.mark.parametrize(("limit", "fits"), [(512 * MiB, True), (256 * MiB, False)])
def test_a_16_bit_rgba_png_is_counted_in_bytes_not_pixels(data_dir: Path, limit: int, fits: bool) -> None:
    path = data_dir.parent / "big16.png"
    png16_rgba(path, 4000)
    job = thumbnail_under(data_dir, limit, path.read_bytes(), "big16.png")
    if fits:
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["original"]["mode"] == "RGBA"
        return
    assert job["status"] == "failed"
    assert job["error"]["code"] == "image_too_large"  # refused before decoding, not resource_exhausted
    assert "would take about 122 MiB" in job["error"]["message"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for peak memory")
def test_a_refused_webp_leaves_the_child_small(tmp_path: Path) -> None:
    source = tmp_path / "big.webp"
    lossless_webp(source, 4000)
    outcome, _, figures = measure(source, limit=LIMITED)
    assert outcome.failed.code == "image_too_large"
    assert figures["peak_rss"] < 100 * MiB


# ---- through the API ------------------------------------------------------------------------


def finished(client: TestClient, services: Any, job_id: str) -> dict[str, Any]:
    burst_worker(services).drain()
    body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] in ("succeeded", "failed"), body
    return body


def test_api_end_to_end(client: TestClient, services: Any) -> None:
    content = with_orientation(cornered((400, 200)), "JPEG", 6)
    job_id = submit(
        client,
        content,
        name="IMG 0001.jpeg",
        processor="thumbnail",
        params={"size": 100},
        content_type="image/jpeg",
    )["id"]
    job = finished(client, services, job_id)
    assert job["status"] == "succeeded"
    assert job["file"]["content_type"] == "image/jpeg"
    assert job["params"] == {"size": 100, "format": "webp"}
    result = job["result"]
    assert result["original"] == {
        "width": 200,
        "height": 400,
        "format": "JPEG",
        "mode": "RGB",
        "animated": False,
    }
    assert (result["thumbnail"]["width"], result["thumbnail"]["height"]) == (50, 100)
    assert result["orientation_applied"] is True
    download = client.get(f"/v1/jobs/{job_id}/result")
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/webp"
    disposition = download.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert "IMG 0001.thumb.webp" in disposition or "IMG%200001.thumb.webp" in disposition
    thumb = Image.open(io.BytesIO(download.content))
    assert (thumb.format, thumb.size) == ("WEBP", (50, 100))
    assert len(download.content) == result["thumbnail"]["bytes"]
    assert is_red(corner_colours(thumb)["tr"])


@pytest.mark.parametrize(("out", "media"), [("png", "image/png"), ("jpeg", "image/jpeg")])
def test_api_output_formats(client: TestClient, services: Any, out: str, media: str) -> None:
    job_id = submit(
        client, encode(noise((64, 32)), "GIF"), name="a.gif", processor="thumbnail", params={"format": out}
    )["id"]
    assert finished(client, services, job_id)["status"] == "succeeded"
    download = client.get(f"/v1/jobs/{job_id}/result")
    assert download.headers["content-type"] == media
    assert Image.open(io.BytesIO(download.content)).size == (64, 32)  # not enlarged


@pytest.mark.parametrize(
    ("content", "sniffed"),
    [
        (b"just some text\n", "text/plain"),
        (b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n", "application/pdf"),
        (encode(Image.new("RGB", (16, 16)), "ICO"), "image/x-icon"),
        (encode(Image.new("RGB", (16, 16)), "JPEG2000"), "image/jp2"),
    ],
    ids=["text", "pdf", "ico", "jpeg2000"],
)
def test_api_refuses_other_types_at_submit(client: TestClient, content: bytes, sniffed: str) -> None:
    response = post_file(client, content, name="x.jpg", processor="thumbnail", content_type="image/jpeg")
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert sniffed in response.json()["detail"]
    assert client.get("/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [{"size": 0}, {"size": 100000}, {"size": "big"}, {"format": "gif"}, {"size": 64, "quality": 90}],
)
def test_api_refuses_bad_params_at_submit(client: TestClient, params: dict[str, Any]) -> None:
    response = post_file(
        client, encode(noise((32, 32)), "PNG"), name="a.png", processor="thumbnail", params=params
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"]


def test_api_lists_the_processor(client: TestClient) -> None:
    listed = {item["name"]: item for item in client.get("/v1/processors").json()["items"]}
    thumbnail = listed["thumbnail"]
    assert "image/png" in thumbnail["accepts"]
    schema = thumbnail["params_schema"]["properties"]
    assert (schema["size"]["minimum"], schema["size"]["maximum"], schema["size"]["default"]) == (
        16,
        4096,
        256,
    )
    assert schema["format"]["enum"] == ["webp", "png", "jpeg"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (png_bomb(100_000, 100_000), "image_too_large"),
        (encode(noise((300, 200)), "JPEG")[:3000], "image_truncated"),
        (b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(4000), "image_corrupt"),
    ],
    ids=["bomb", "truncated", "corrupt"],
)
def test_api_failures_are_clean(client: TestClient, services: Any, content: bytes, code: str) -> None:
    job_id = submit(client, content, name="evil.png", processor="thumbnail")["id"]
    started = time.monotonic()
    job = finished(client, services, job_id)
    assert time.monotonic() - started < 5
    assert job["status"] == "failed"
    assert job["attempts"] == 1  # not retried
    assert job["error"]["code"] == code
    assert str(services.settings.data_dir) not in job["error"]["message"]
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409


def test_api_pixel_limit_is_a_setting(data_dir: Path) -> None:
    """A valid 2000 x 1500 photo is refused under a 1-megapixel limit, a smaller one is not."""
    settings = make_settings(data_dir, max_image_pixels=1_000_000)
    with TestClient(create_app(settings, dispatcher=InMemoryDispatcher())) as client:
        services = client.app_state["services"]
        big = submit(client, encode(noise((2000, 1500)), "JPEG"), name="big.jpg", processor="thumbnail")["id"]
        small = submit(client, encode(noise((1000, 1000)), "JPEG"), name="ok.jpg", processor="thumbnail")[
            "id"
        ]
        started = time.monotonic()
        burst_worker(services).drain()
        assert time.monotonic() - started < 5
        big_job = client.get(f"/v1/jobs/{big}").json()
        assert big_job["status"] == "failed"
        assert big_job["error"]["code"] == "image_too_large"
        assert "1,000,000" in big_job["error"]["message"]
        assert client.get(f"/v1/jobs/{small}").json()["status"] == "succeeded"
