"""The web dashboard (``/``) in a real browser against a real server.

Everything the page shows after it loaded comes from its own requests: the list, uploads through
XMLHttpRequest, and the live updates of ``/v1/events`` read with ``fetch()``. No test reloads the
page to see a change, and every wait is Playwright's auto-waiting ``expect`` on a real condition.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, Request, Route, expect

from filejobs.api.security_headers import DOCS_CSP
from filejobs.testing import status_is, wait_for
from tests.conftest import REPO
from tests.web.conftest import (
    PHONE,
    SCREENSHOT_TARGET,
    ServerFactory,
    create_key,
    new_context,
    png_bytes,
    restart,
    submit,
    watch_errors,
)

pytestmark = pytest.mark.e2e

#: Long enough for a job on a loaded CI machine, short enough to fail fast.
JOB_TIMEOUT_MS = 20_000
PNG = {"name": "photo.png", "mimeType": "image/png"}
STATIC = REPO / "service" / "filejobs" / "web" / "static"


def row(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')


def row_named(page: Page, name: str) -> Locator:
    return page.get_by_test_id("job-row").filter(has=page.get_by_role("button", name=f"{name},"))


def open_dashboard(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")


def drop(page: Page, files: list[dict[str, Any]]) -> None:
    """Drop ``files`` on the drop zone, as a drag from the desktop does (a DataTransfer of Files)."""
    page.evaluate(
        """(files) => {
            const data = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0));
                data.items.add(new File([bytes], f.name, { type: f.mimeType }));
            }
            const zone = document.querySelector('[data-testid="dropzone"]');
            for (const type of ['dragenter', 'dragover', 'drop']) {
                const init = { bubbles: true, cancelable: true, dataTransfer: data };
                zone.dispatchEvent(new DragEvent(type, init));
            }
        }""",
        [
            {"name": f["name"], "mimeType": f["mimeType"], "base64": base64.b64encode(f["buffer"]).decode()}
            for f in files
        ],
    )


def upload(
    page: Page, files: list[dict[str, Any]], processor: str, *, dropped: bool = False, **params: str
) -> None:
    """Choose (or drop) ``files``, pick the processor, fill params, press Upload."""
    page.get_by_label("Processor").select_option(processor)
    for name, value in params.items():
        field = page.get_by_test_id(f"param-{name}")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(label=value)
        else:
            field.fill(value)
    if dropped:
        drop(page, files)
        expect(page.get_by_test_id("selected-files")).to_contain_text(files[0]["name"])
    else:
        page.get_by_test_id("file-input").set_input_files(files)  # type: ignore[arg-type]
    page.get_by_role("button", name="Upload", exact=True).click()


def horizontal_overflow(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


# ---- tests ----------------------------------------------------------------------------------


def test_the_event_stream_parser(page: Page) -> None:
    """sse.js alone, served by the test (no server): BOM, LF, CR and CRLF line ends split across
    chunks, comments, retry, an id without data, a field without a colon, an unfinished event."""

    def serve(route: Route) -> None:
        if route.request.url.endswith("/static/js/sse.js"):
            route.fulfill(path=STATIC / "js" / "sse.js", content_type="text/javascript")
        else:
            route.fulfill(body="<!doctype html><title>parser</title>", content_type="text/html")

    page.route("http://dashboard.test/**", serve)
    page.goto("http://dashboard.test/")
    chunks = [
        "\ufeffretry: 1500\n\n",
        'event: job\nid: 7\ndata: {"a"',
        ":1}\n\n",
        ": keep-alive\n\n",
        "data: first\r\ndata:second\r",
        "\n\r\n",
        "id: 8\n\n",
        'event: deleted\ndata: {"id": "x"}\r\r',
        "retry: soon\n",
        "data\n\n",
        "event: reset\ndata: {}\n",
    ]
    seen = page.evaluate(
        """async (chunks) => {
            const { SseParser } = await import('/static/js/sse.js');
            const seen = [];
            const parser = new SseParser({
                onEvent: (e) => seen.push(['event', e.type, e.data, e.id]),
                onRetry: (ms) => seen.push(['retry', ms]),
                onComment: (text) => seen.push(['comment', text]),
            });
            for (const chunk of chunks) parser.push(chunk);
            return seen;
        }""",
        chunks,
    )
    assert seen == [
        ["retry", 1500],
        ["event", "job", '{"a":1}', "7"],
        ["comment", " keep-alive"],
        ["event", "message", "first\nsecond", "7"],
        ["event", "deleted", '{"id": "x"}', "8"],
        ["event", "message", "", "8"],
    ]


def test_two_uploads_go_live_to_succeeded_and_the_result_opens(
    page: Page, start_server: ServerFactory
) -> None:
    server = start_server()
    open_dashboard(page, server.base_url)
    page.evaluate("window.__sameDocument = 'still here'")
    expect(page.get_by_test_id("jobs-state")).to_have_text(re.compile("No jobs yet"))

    upload(
        page,
        [
            {"name": "alpha.txt", "mimeType": "text/plain", "buffer": b"one two three\n"},
            {"name": "beta.txt", "mimeType": "text/plain", "buffer": b"four five\nsix\n"},
        ],
        "inspect",
    )

    expect(page.get_by_test_id("upload-item")).to_have_count(2)  # each with its byte progress
    rows = page.get_by_test_id("job-row")
    expect(rows).to_have_count(2)
    for name in ("alpha.txt", "beta.txt"):
        expect(row_named(page, name)).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
        expect(row_named(page, name).get_by_role("progressbar")).to_have_attribute("value", "1")
    # the statuses arrived over the event stream: the document is the one loaded at the start
    assert page.evaluate("window.__sameDocument") == "still here"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    opener = row_named(page, "beta.txt").get_by_test_id("job-open")
    opener.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", name="beta.txt")).to_be_visible()
    result = page.get_by_test_id("details-result")
    expect(result).to_be_visible()
    job_id = row_named(page, "beta.txt").get_attribute("data-job-id")
    with server.client() as client:
        expected = client.get(f"/v1/jobs/{job_id}/result").json()
    text = result.text_content() or ""
    assert json.loads(text) == expected
    assert text == json.dumps(expected, indent=2, ensure_ascii=False)  # pretty-printed, two spaces
    expect(page.get_by_test_id("details-created")).not_to_have_text("\u2014")
    expect(page.get_by_test_id("details-finished")).not_to_have_text("\u2014")
    expect(page.get_by_test_id("action-download")).to_be_visible()
    expect(page.get_by_test_id("action-cancel")).to_be_hidden()

    with page.expect_download() as download_info:
        page.get_by_test_id("action-download").click()
    download = download_info.value
    assert download.suggested_filename == "beta.result.json"
    assert json.loads(Path(download.path()).read_text()) == expected

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()


def test_a_running_job_is_cancelled_from_the_page_and_another_live(
    page: Page, start_server: ServerFactory
) -> None:
    server = start_server()
    open_dashboard(page, server.base_url)

    upload(
        page,
        [{"name": "slow.txt", "mimeType": "text/plain", "buffer": b"zzz\n"}],
        "sleep",
        seconds="60",
        steps="600",
    )
    slow = row_named(page, "slow.txt")
    expect(slow).to_have_attribute("data-status", "running", timeout=JOB_TIMEOUT_MS)
    with server.client() as client:  # the generated form sent typed params, defaults included
        params = client.get(f"/v1/jobs/{slow.get_attribute('data-job-id')}").json()["params"]
    assert params == {"seconds": 60.0, "steps": 600, "ignore_cancel": False}
    expect(slow.get_by_test_id("job-progress-text")).to_have_text(re.compile(r"^[1-9][0-9]?%$"))

    slow.get_by_test_id("job-open").click()
    expect(page.get_by_test_id("details")).to_have_attribute("data-status", "running")
    page.get_by_role("button", name="Cancel job").click()
    expect(slow).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_test_id("details-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    page.get_by_role("button", name="Close details").click()

    # A job made and cancelled by another client shows up and changes with no action here.
    with server.client() as client:
        other = submit(
            client, "elsewhere.txt", b"zzz\n", processor="sleep", params={"seconds": 60, "steps": 600}
        )
        expect(row(page, other["id"])).to_have_attribute("data-status", "running", timeout=JOB_TIMEOUT_MS)
        assert client.post(f"/v1/jobs/{other['id']}/cancel").status_code == 200
    expect(row(page, other["id"])).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_test_id("job-row").first).to_have_attribute("data-job-id", other["id"])  # newest first

    row(page, other["id"]).get_by_test_id("job-open").click()
    page.get_by_role("button", name="Retry").click()
    expect(row(page, other["id"])).to_have_attribute("data-status", re.compile("^(queued|running)$"))
    expect(page.get_by_role("button", name="Cancel job")).to_be_visible()


def test_the_stream_resumes_after_a_restart_with_last_event_id(
    page: Page, start_server: ServerFactory
) -> None:
    """The server goes away and comes back: the page shows it is reconnecting, reconnects with
    Last-Event-ID, and gets what changed meanwhile from the stream (it does not re-read the list)."""
    server = start_server()
    holding: list[bool] = []  # while non-empty, the page's attempts to reconnect fail

    def gate(route: Route) -> None:
        if holding:
            route.abort()
        else:
            route.continue_()

    streams: list[dict[str, str]] = []
    lists: list[str] = []

    def seen(request: Request) -> None:
        if request.url.endswith("/v1/events"):
            streams.append(request.headers)
        elif "/v1/jobs?" in request.url:
            lists.append(request.url)

    page.route("**/v1/events", gate)
    page.on("request", seen)
    open_dashboard(page, server.base_url)
    page.evaluate("window.__sameDocument = 'still here'")
    with server.client() as client:
        first = submit(client, "before.txt", b"before the restart\n")
    expect(row(page, first["id"])).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    assert "last-event-id" not in streams[0]

    holding.append(True)
    restart(server)
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
    lists_before = len(lists)
    with server.client() as client:
        second = submit(client, "meanwhile.txt", b"made while the page was away\n")
        wait_for(client, second["id"], status_is("succeeded"), timeout=20)
    holding.clear()

    expect(row(page, second["id"])).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    assert len(streams) >= 2
    for headers in streams[1:]:
        assert re.fullmatch(r"[0-9]+", headers.get("last-event-id", "")), headers
    assert len(lists) == lists_before, lists[lists_before:]

    with server.client() as client:  # a deletion elsewhere takes the row away
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
    expect(row(page, first["id"])).to_have_count(0)
    assert page.evaluate("window.__sameDocument") == "still here"


def test_processor_descriptions_show_inline_code_and_emphasis_never_html(
    page: Page, start_server: ServerFactory
) -> None:
    server = start_server(workers=0)
    hostile = {
        "name": "marked",
        "description": "Longest edge `size` pixels, *never* enlarged; `<b>bold</b>` "
        '<img src=x onerror="window.pwned=1">.',
        "accepts": ["text/plain"],
        "params_schema": {
            "type": "object",
            "properties": {"size": {"type": "integer", "description": "Pixels of the `longest` edge."}},
        },
    }

    def processors(route: Route) -> None:
        route.fulfill(json={"items": [hostile]})

    page.route("**/v1/processors", processors)
    open_dashboard(page, server.base_url)
    page.get_by_label("Processor").select_option("marked")
    description = page.locator("#processor-description")
    expect(description).to_have_text(
        'Longest edge size pixels, never enlarged; <b>bold</b> <img src=x onerror="window.pwned=1">. '
        "Accepts text/plain."
    )
    expect(description.locator("code")).to_have_text(["size", "<b>bold</b>"])
    expect(description.locator("em")).to_have_text(["never"])
    assert description.locator("img, b").count() == 0
    expect(page.locator("#param-size-hint code")).to_have_text(["longest"])
    assert page.evaluate("window.pwned") is None


def test_status_filter_and_load_more(page: Page, start_server: ServerFactory) -> None:
    server = start_server(workers=0)  # nothing runs: every job stays queued until cancelled
    with server.client() as client:
        jobs = [submit(client, f"file-{index:02d}.txt", b"x\n") for index in range(53)]
    newest_first = [job["id"] for job in reversed(jobs)]
    open_dashboard(page, server.base_url)

    rows = page.get_by_test_id("job-row")
    more = page.get_by_role("button", name="Load more")
    expect(rows).to_have_count(50)
    expect(more).to_be_visible()
    more.click()
    expect(rows).to_have_count(53)
    expect(more).to_be_hidden()
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.jobId)") == newest_first

    status = page.get_by_label("Show", exact=True)
    status.select_option("cancelled")
    expect(page.get_by_test_id("jobs-state")).to_have_text("No cancelled jobs.")
    expect(rows).to_have_count(0)
    with server.client() as client:  # a job that comes to match the filter appears
        assert client.post(f"/v1/jobs/{jobs[3]['id']}/cancel").status_code == 200
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", jobs[3]["id"])
    expect(rows.first).to_have_attribute("data-status", "cancelled")

    status.select_option("queued")
    expect(rows).to_have_count(50)
    expect(more).to_be_visible()
    more.click()
    expect(rows).to_have_count(52)
    expect(page.locator(f'[data-job-id="{jobs[3]["id"]}"]')).to_have_count(0)


#: Whether an object URL still loads, as an image: the page's CSP lets images read blob: URLs,
#: not fetch().
LOADS = """u => new Promise(done => Object.assign(new Image(), {
    onload: () => done('alive'), onerror: () => done('revoked'), src: u}))"""


def test_a_thumbnail_shows_inline_and_its_object_url_goes_with_the_row(
    page: Page, start_server: ServerFactory
) -> None:
    server = start_server()
    open_dashboard(page, server.base_url)

    upload(page, [{**PNG, "buffer": png_bytes(96, 64)}], "thumbnail", dropped=True, size="48", format="png")
    photo = row_named(page, "photo.png")
    expect(photo).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    image = photo.get_by_test_id("job-thumbnail")
    expect(image).to_be_visible()
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    expect(image).to_have_attribute("alt", "Thumbnail of photo.png")
    page.wait_for_function("img => img.complete && img.naturalWidth === 48", arg=image.element_handle())
    url = image.get_attribute("src")

    # a refused upload shows the problem's detail
    upload(page, [{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image\n"}], "thumbnail")
    with server.client() as client:
        refused = client.post(
            "/v1/jobs", files={"file": ("notes.txt", b"not an image\n")}, data={"processor": "thumbnail"}
        )
    assert refused.status_code == 415
    failed = page.get_by_test_id("upload-item").filter(has_text="notes.txt")
    expect(failed).to_have_attribute("data-state", "failed")
    expect(failed.get_by_test_id("upload-status")).to_contain_text(refused.json()["detail"])
    expect(page.get_by_test_id("job-row")).to_have_count(1)

    photo.get_by_test_id("job-open").click()
    big = page.get_by_test_id("details-thumbnail")
    expect(big).to_be_visible()
    expect(big).to_have_attribute("alt", "Thumbnail of photo.png")
    expect(page.get_by_test_id("details-result")).to_contain_text('"format": "png"')
    with page.expect_download() as download_info:  # named by the answer's Content-Disposition
        page.get_by_role("button", name="Download result").click()
    assert download_info.value.suggested_filename == "photo.thumb.png"
    assert Path(download_info.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # delete, with its confirm step: the row goes, and so does its object URL
    assert page.evaluate(LOADS, url) == "alive"
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_test_id("delete-confirm")).to_be_visible()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.get_by_test_id("job-row")).to_have_count(0)
    assert page.evaluate(LOADS, url) == "revoked"


def test_a_key_is_asked_for_kept_in_session_storage_and_forgotten(
    page: Page, start_server: ServerFactory, data_dir: Path
) -> None:
    secret = create_key(data_dir, "dashboard")
    server = start_server()
    with server.client(headers={"Authorization": f"Bearer {secret}"}) as client:
        made = submit(client, "from-the-api.txt", b"hello\n")

    page.goto(f"{server.base_url}/")
    key_input = page.get_by_label("API key", exact=True)
    expect(key_input).to_be_visible()
    expect(key_input).to_have_attribute("type", "password")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "auth")

    key_input.fill("fj_not-a-real-key")
    page.get_by_role("button", name="Use this key").click()
    expect(page.get_by_test_id("key-error")).to_contain_text("not accepted")

    key_input.fill(secret)
    page.get_by_role("button", name="Use this key").click()
    expect(page.get_by_test_id("key-section")).to_be_hidden()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    expect(row(page, made["id"])).to_be_visible()

    upload(page, [{"name": "with-key.txt", "mimeType": "text/plain", "buffer": b"keyed\n"}], "inspect")
    expect(row_named(page, "with-key.txt")).to_have_attribute(
        "data-status", "succeeded", timeout=JOB_TIMEOUT_MS
    )

    assert page.evaluate("sessionStorage.getItem('filejobs.apiKey')") == secret
    local = page.evaluate("JSON.stringify(Object.entries(localStorage))")
    assert secret not in local
    assert secret not in page.url

    page.get_by_role("button", name="Forget key").click()
    expect(key_input).to_be_visible()
    expect(page.get_by_test_id("job-row")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('filejobs.apiKey')") is None


def test_a_phone_sized_screen_has_no_horizontal_scroll(browser: Browser, start_server: ServerFactory) -> None:
    server = start_server()
    long_name = "quarterly-report-" * 8 + "final.txt"
    with server.client() as client:
        ok = submit(client, long_name, b"a b c\n")
        bad = submit(client, "broken.txt", b"x\n", processor="fail", params={"message": "no-spaces-" * 20})
        wait_for(client, ok["id"], status_is("succeeded"), timeout=20)
        wait_for(client, bad["id"], status_is("failed"), timeout=20)

    context = new_context(browser, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        page = context.new_page()
        errors = watch_errors(page)
        open_dashboard(page, server.base_url)
        expect(row(page, ok["id"])).to_have_attribute("data-status", "succeeded")
        expect(row(page, bad["id"])).to_have_attribute("data-status", "failed")
        assert horizontal_overflow(page) <= PHONE["width"]

        # one column: the jobs come below the upload form
        upload_box = page.locator("#upload-section").bounding_box()
        jobs_box = page.locator("#jobs-section").bounding_box()
        assert upload_box is not None
        assert jobs_box is not None
        assert jobs_box["y"] >= upload_box["y"] + upload_box["height"]

        row(page, bad["id"]).get_by_test_id("job-open").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(page.get_by_test_id("details-error-code")).to_have_text("bad_input")
        expect(page.get_by_test_id("details-error-message")).to_contain_text("no-spaces-")
        box = dialog.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"]
        assert horizontal_overflow(page) <= PHONE["width"]
        assert not errors, errors
    finally:
        context.close()


def test_screenshot_of_jobs_in_several_states(
    page: Page, start_server: ServerFactory, tmp_path: Path
) -> None:
    """The README's picture: succeeded (a CSV profile, a thumbnail), failed, cancelled, running and
    queued jobs (one worker: the last job waits for the running one)."""
    server = start_server()
    with server.client() as client:
        csv = submit(
            client,
            "sales-2026.csv",
            b"region,units,price\nnorth,12,3.5\nsouth,7,4.25\n",
            processor="csv-profile",
        )
        thumb = submit(
            client, "harbour.png", png_bytes(320, 200), processor="thumbnail", params={"size": 128}
        )
        broken_pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog"  # cut short: no pages, no xref
        failed = submit(client, "scan-0042.pdf", broken_pdf, processor="pdf-text")
        for job, status in ((csv, "succeeded"), (thumb, "succeeded"), (failed, "failed")):
            wait_for(client, job["id"], status_is(status), timeout=20)
        stopped = submit(
            client, "old-export.zip", b"PK\x05\x06" + b"\0" * 18, processor="sleep", params={"seconds": 60}
        )
        assert client.post(f"/v1/jobs/{stopped['id']}/cancel").status_code == 200
        running = submit(
            client, "backup.tar", b"\0" * 4096, processor="sleep", params={"seconds": 6, "steps": 60}
        )
        queued = submit(client, "notes.txt", b"remember the milk\n", processor="inspect")

    open_dashboard(page, server.base_url)
    expect(row(page, queued["id"])).to_have_attribute("data-status", "queued")
    expect(row(page, stopped["id"])).to_have_attribute("data-status", "cancelled")
    expect(row(page, failed["id"])).to_have_attribute("data-status", "failed")
    progress = row(page, running["id"]).get_by_test_id("job-progress-text")
    expect(progress).to_have_text(re.compile(r"^[2-9][0-9]%$"), timeout=JOB_TIMEOUT_MS)  # live, 20 % or more
    image = row(page, thumb["id"]).get_by_test_id("job-thumbnail")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=shot, animations="disabled")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOT_TARGET:
        target = Path(SCREENSHOT_TARGET)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_the_api_docs_render_offline_under_their_policy(page: Page, start_server: ServerFactory) -> None:
    """Swagger UI, served from this origin (issue 14, item 19) under the docs' own
    Content-Security-Policy (item 12): it renders the operations, nothing is refused by the
    policy (the page fixture fails the test on any CSP message) and nothing is fetched elsewhere."""
    server = start_server()
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda request: (
            elsewhere.append(request.url)
            if not request.url.startswith((server.base_url, "data:", "blob:"))
            else None
        ),
    )
    response = page.goto(f"{server.base_url}/docs")
    assert response is not None
    assert response.headers["content-security-policy"] == DOCS_CSP
    page.wait_for_selector(".opblock", timeout=20_000)  # the operations rendered
    assert not elsewhere, elsewhere


def test_the_details_show_the_webhook_delivery(page: Page, start_server: ServerFactory) -> None:
    from filejobs.testing.webhooks import Receiver

    server = start_server(webhook_allow_http="true", webhook_allow_private="true")
    with Receiver() as receiver:
        with server.client() as client:
            assert client.post("/v1/webhooks", json={"url": receiver.url}).status_code == 201
        open_dashboard(page, server.base_url)
        upload(page, [{"name": "hooked.txt", "mimeType": "text/plain", "buffer": b"a b c\n"}], "inspect")
        expect(row_named(page, "hooked.txt")).to_have_attribute(
            "data-status", "succeeded", timeout=JOB_TIMEOUT_MS
        )
        row_named(page, "hooked.txt").get_by_test_id("job-open").click()
        # the change of the job's notification arrives over the event stream too
        expect(page.get_by_test_id("details-notification")).to_have_text("delivered", timeout=JOB_TIMEOUT_MS)
        receiver.wait_count(1)


def test_a_reused_job_links_to_the_job_whose_result_it_reused(
    page: Page, start_server: ServerFactory
) -> None:
    server = start_server(reuse="true")
    with server.client() as client:
        first = submit(client, "scan.txt", b"the same scan\n", content_type="text/plain")
        wait_for(client, first["id"], status_is("succeeded"), timeout=JOB_TIMEOUT_MS / 1000)
        again = submit(client, "scan-again.txt", b"the same scan\n", content_type="text/plain")
    assert again["status"] == "succeeded"
    assert again["reused_from"] == first["id"]

    open_dashboard(page, server.base_url)
    row(page, first["id"]).get_by_test_id("job-open").click()
    expect(page.get_by_test_id("details-id")).to_have_text(first["id"])
    expect(page.get_by_test_id("details-reused-from")).to_have_count(0)  # it ran: no such line
    page.get_by_test_id("details-close").click()

    row(page, again["id"]).get_by_test_id("job-open").click()
    expect(page.get_by_test_id("details-info-attempts")).to_have_text("0")
    link = page.get_by_test_id("details-reused-from").get_by_role("link")
    expect(link).to_have_text(first["id"])
    link.click()
    expect(page.get_by_test_id("details-id")).to_have_text(first["id"])
    expect(page.locator("#details-title")).to_have_text("scan.txt")
    expect(page.get_by_test_id("details-info-attempts")).to_have_text("1")
