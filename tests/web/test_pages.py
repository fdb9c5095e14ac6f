"""The dashboard's files as the app serves them (no browser needed; tests/web/test_dashboard.py
drives the page itself)."""

from __future__ import annotations

import posixpath
import re

from fastapi.testclient import TestClient

from filejobs.keys import create_key
from filejobs.services import Services


def test_the_page_and_its_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert {"/static/app.js", "/static/app.css"} <= set(assets)
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
    assert client.get("/static/app.js").headers["content-type"] == "text/javascript; charset=utf-8"
    assert client.get("/static/nothing.js").status_code == 404
    assert client.get("/static/../service/filejobs/app.py").status_code == 404


def module_scripts(client: TestClient) -> dict[str, str]:
    """Every script the page loads: app.js and the modules it imports, directly or not."""
    found: dict[str, str] = {}
    pending = ["/static/app.js"]
    while pending:
        path = pending.pop()
        if path in found:
            continue
        response = client.get(path)
        assert response.status_code == 200, path
        found[path] = response.text
        folder = path.rsplit("/", 1)[0]
        for target in re.findall(r"^import [^;]* from '([^']+)';$", response.text, re.M):
            assert target.startswith("./"), (path, target)  # relative, same origin
            pending.append(posixpath.normpath(f"{folder}/{target}"))
    return found


def test_every_module_script_is_served_as_javascript(client: TestClient) -> None:
    scripts = module_scripts(client)
    assert {"/static/app.js", "/static/js/sse.js", "/static/js/api.js", "/static/js/list.js"} <= set(scripts)
    for path in scripts:
        # a module script with any other type is refused by the browser
        assert client.get(path).headers["content-type"] == "text/javascript; charset=utf-8", path


def test_the_page_needs_no_key_but_the_api_does(client: TestClient, services: Services) -> None:
    create_key(services.db, "someone")
    assert client.get("/").status_code == 200  # the page holds no data
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/v1/events").status_code == 401


def test_the_page_loads_nothing_from_elsewhere(client: TestClient) -> None:
    for path in ("/", "/static/app.css", *module_scripts(client)):
        text = client.get(path).text
        assert not re.search(r"https?://", text.replace("http://www.w3.org", "")), path
