"""The dashboard's resumable uploads: tus-js-client (vendored) in Chromium, a page reload halfway,
the offer to resume, and the upload going on from the server's offset into one job.

The page's ``?resumable-threshold=`` and ``?resumable-chunk=`` make a 4 MiB file go with tus in
256 KiB chunks. The reload comes at a known point: the test lets two PATCHes through and holds the
third (a Playwright route that never answers), so the server holds exactly two chunks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Request, Route, expect

from filejobs.testing import status_is, wait_for
from tests.web.conftest import ServerFactory

pytestmark = pytest.mark.e2e

KiB = 1024
CHUNK = 256 * KiB
QUERY = f"?resumable-threshold={1024 * KiB}&resumable-chunk={CHUNK}"
JOB_TIMEOUT_MS = 20_000
TUS = {"Tus-Resumable": "1.0.0"}


def test_a_reload_mid_upload_offers_to_resume_and_the_upload_goes_on(
    page: Page, start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server()
    big = tmp_path / "big.txt"
    big.write_bytes(b"a line of a big text file\n" * (4 * 1024 * KiB // 26))
    page.goto(f"{server.base_url}/{QUERY}")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("resumable")).to_be_hidden()

    patches: list[str] = []
    held: list[Route] = []
    holding = [True]

    def gate(route: Route) -> None:
        if route.request.method != "PATCH" or not holding[0]:
            route.continue_()
            return
        patches.append(route.request.headers["upload-offset"])
        if len(patches) <= 2:
            route.continue_()
        else:
            held.append(route)  # never answered: the reload cuts it (never let go: that would send it)

    page.route("**/v1/uploads/*", gate)
    page.get_by_label("Processor").select_option("upper")
    page.get_by_test_id("file-input").set_input_files(big)
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_test_id("upload-item")).to_have_attribute("data-state", "uploading")
    waited = 0
    while not held and waited < 10_000:  # bounded: the third PATCH is held within a second or two
        page.wait_for_timeout(20)  # Playwright's event loop runs the route callbacks meanwhile
        waited += 20
    assert held, f"the third PATCH never came (PATCHes: {patches})"
    assert patches == ["0", str(CHUNK), str(2 * CHUNK)]

    page.reload()
    holding[0] = False
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    offer = page.get_by_test_id("resumable-item")
    expect(offer).to_have_count(1)
    expect(offer).to_contain_text("big.txt")
    expect(offer).to_contain_text("512 KiB")  # two chunks stored
    url = offer.get_attribute("data-url")
    assert url is not None
    assert url.startswith("/v1/uploads/")
    with httpx.Client(base_url=server.base_url) as client:
        assert client.head(url, headers=TUS).headers["upload-offset"] == str(2 * CHUNK)

    after: list[str] = []

    def record(request: Request) -> None:
        if request.method == "PATCH":
            after.append(request.headers["upload-offset"])

    page.on("request", record)
    expect(page.get_by_label("Processor")).to_have_value("upper")  # remembered for the tab
    page.get_by_test_id("file-input").set_input_files(big)
    page.get_by_role("button", name="Upload", exact=True).click()
    item = page.get_by_test_id("upload-item")
    expect(item).to_have_attribute("data-resumed", "true")
    expect(item).to_have_attribute("data-state", "done", timeout=JOB_TIMEOUT_MS)
    assert after[0] == str(2 * CHUNK), after  # nothing stored was sent again
    expect(page.get_by_test_id("resumable")).to_be_hidden()
    row = page.get_by_test_id("job-row")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)

    with server.client() as client:
        jobs = client.get("/v1/jobs").json()["items"]
        assert len(jobs) == 1
        job = wait_for(client, jobs[0]["id"], status_is("succeeded"), timeout=30)
        assert job["file"]["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
        assert job["file"]["name"] == "big.txt"
        assert client.get(f"/v1/jobs/{job['id']}/result").content == big.read_bytes().upper()
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('tus::')).length") == 0


def test_the_vendored_client_is_served_with_its_licence(page: Page, start_server: ServerFactory) -> None:
    server = start_server()
    with server.client() as client:
        script = client.get("/static/vendor/tus-js-client/tus.min.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        licence = client.get("/static/vendor/tus-js-client/LICENSE")
        assert licence.status_code == 200
        assert "MIT" in licence.text or "Permission is hereby granted" in licence.text
    page.goto(f"{server.base_url}/")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    assert page.evaluate("typeof window.tus") == "undefined"  # loaded only when a big file needs it
    loaded = page.evaluate("import('/static/js/resumable.js').then((m) => m.loadTus()).then((t) => !!t)")
    assert loaded is True
    assert page.evaluate("window.tus.isSupported") is True
