"""``/docs`` works without internet: every script, stylesheet and icon they load
comes from this server."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}


def test_the_docs_load_only_same_origin_assets_that_answer(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = ASSET.findall(response.text)
    assert len(urls) >= 2, response.text  # the script and the icon at least
    assert "http://" not in response.text
    assert "https://" not in response.text
    assert "//" not in "".join(urls)
    for url in urls:
        assert url.startswith("/docs/assets/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"].split(";")[0] == TYPES[suffix], url
        assert len(asset.content) > 100, url
    assert "/openapi.json" in response.text
    assert client.get("/openapi.json").status_code == 200


def test_swagger_ui_fetches_no_validator_badge(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text
    assert client.get("/docs/oauth2-redirect").status_code == 200
