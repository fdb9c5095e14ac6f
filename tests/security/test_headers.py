"""Security headers (issue 14, item 12): nothing the service answers is sniffed or framed, the
dashboard runs under a Content-Security-Policy, and a result of untrusted content never renders as
a page of the service's origin."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from filejobs.api.security_headers import API_CSP, DASHBOARD_CSP, DOCS_CSP
from filejobs.services import Services
from filejobs.testing import post_file, submit
from tests.conftest import burst_worker
from tests.security.helpers import assert_problem

SCRIPT = b"<!doctype html><script>document.title = 'pwned'</script><p>hello</p>\n"


def assert_guarded(response: httpx.Response, csp: str | None = API_CSP) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers.get("content-security-policy") == csp


def test_an_html_result_is_an_attachment_in_a_sandbox(client: TestClient, services: Services) -> None:
    job_id = submit(client, SCRIPT, name="page.txt", processor="echo-html")["id"]
    assert burst_worker(services).drain() == 1

    response = client.get(f"/v1/jobs/{job_id}/result")

    assert response.status_code == 200
    assert response.content == SCRIPT
    assert response.headers["content-disposition"].startswith("attachment;")
    assert_guarded(response)  # a browser opening it anyway runs no script: sandbox, default-src 'none'


def test_json_answers_and_problems_are_not_sniffed(client: TestClient, services: Services) -> None:
    job_id = submit(client, SCRIPT, name="page.txt")["id"]
    assert burst_worker(services).drain() == 1
    assert_guarded(client.get(f"/v1/jobs/{job_id}"))  # the status poll's fast path
    assert_guarded(client.get(f"/v1/jobs/{job_id}?wait=1"))  # the route
    assert_guarded(client.get(f"/v1/jobs/{job_id}/result"))  # the JSON result
    assert_guarded(client.get("/v1/jobs"))
    assert_guarded(client.post("/v1/jobs", content=b"x", headers={"content-type": "text/html"}))
    assert_guarded(client.get("/v1/jobs/not-a-job"))
    assert_guarded(client.get("/no/such/page"))
    assert_guarded(client.get("/openapi.json"))
    assert_guarded(client.get("/docs"), DOCS_CSP)  # served offline: its own policy (tests/web render it)
    assert client.get("/redoc").status_code == 404  # not served: ReDoc fetches its logo from a CDN


def test_an_unexpected_error_is_guarded_too(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(client)["id"]

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services.reader, "aget_row", broken)  # the fast path's read and the route's
    response = client.get(f"/v1/jobs/{job_id}")
    assert_problem(response, 500)
    assert_guarded(response)


def test_the_dashboard_has_a_policy_it_works_under(client: TestClient) -> None:
    page = client.get("/")
    assert_guarded(page, DASHBOARD_CSP)
    for asset in ("/static/app.js", "/static/js/sse.js", "/static/app.css", "/static/favicon.svg"):
        assert_guarded(client.get(asset), DASHBOARD_CSP)
    # The policy allows no inline script or style: the page has none (tests/web drive it under it).
    html = page.text.lower()
    assert "<style" not in html
    assert " style=" not in html
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", html)  # no onclick= and the like
    assert html.count("<script") == html.count('<script type="module" src="/static/')


def test_the_fast_paths_answers_are_guarded_once(client: TestClient, services: Services) -> None:
    """The status poll's and the upload's fast paths sit outside the middleware and add the headers
    themselves: every answer of theirs has each header exactly once."""
    accepted = post_file(client, SCRIPT, name="page.txt")  # the upload's fast path: 202
    job_id = accepted.json()["id"]
    poll = client.get(f"/v1/jobs/{job_id}")  # the status poll's fast path: 200
    not_modified = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": poll.headers["etag"]})
    refused = client.post("/v1/jobs", files={"file": ("a.txt", b"x")}, data={"processor": "nope"})
    head = client.head(f"/v1/jobs/{job_id}")  # HEAD: the GET route, inside the middleware
    assert (poll.status_code, not_modified.status_code, refused.status_code, head.status_code) == (
        200,
        304,
        422,
        200,
    )
    for response in (accepted, poll, not_modified, refused, head):
        assert_guarded(response)
        for name in ("x-content-type-options", "x-frame-options", "content-security-policy"):
            assert len(response.headers.get_list(name)) == 1, (response.request.url, name)
