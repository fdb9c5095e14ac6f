"""The dashboard's files as the app serves them (no browser needed; tests/web/test_dashboard.py
drives the page itself)."""

from __future__ import annotations

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
    script = client.get("/static/app.js").headers["content-type"]
    assert script.startswith(("text/javascript", "application/javascript"))
    assert client.get("/static/nothing.js").status_code == 404
    assert client.get("/static/../service/filejobs/app.py").status_code == 404


def test_the_page_needs_no_key_but_the_api_does(client: TestClient, services: Services) -> None:
    create_key(services.db, "someone")
    assert client.get("/").status_code == 200  # the page holds no data
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/v1/events").status_code == 401


def test_the_page_loads_nothing_from_elsewhere(client: TestClient) -> None:
    for path in ("/", "/static/app.js", "/static/app.css"):
        text = client.get(path).text
        assert not re.search(r"https?://", text.replace("http://www.w3.org", "")), path
