"""POST /v1/jobs: client filenames, from the form and raw Content-Disposition headers, sanitised."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from filejobs.testing import post_file
from tests.uploads.helpers import (
    MULTIPART,
    assert_only_upload,
    multipart,
    part,
)

# ==== filenames through the API =================================================================


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/etc/shadow", "shadow"),
        ("C:\\x\\y.txt", "y.txt"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("x" * 300, "x" * 255),
        ("€" * 100, "€" * 85),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
        ("..", "upload"),
        ("résumé \u2013 final.pdf", "résumé \u2013 final.pdf"),
    ],
    ids=[
        "dotdot",
        "absolute",
        "windows",
        "windows-dotdot",
        "bidi",
        "300-bytes",
        "multibyte",
        "300-bytes-keeps-extension",
        "dots",
        "utf8",
    ],
)
def test_client_filenames_are_sanitised(
    client: TestClient, data_dir: Path, filename: str, expected: str
) -> None:
    response = post_file(client, name=filename)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["name"] == expected
    assert len(expected.encode("utf-8")) <= 255
    # The name is metadata only: the stored file has the server's name.
    assert_only_upload(data_dir, job["id"])


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        (b'form-data; name="file"; filename="a\x07b\x1b[31mc.txt"', "ab[31mc.txt"),
        (b'form-data; name="file"; filename="tab\there.txt"', "tabhere.txt"),
        ('form-data; name="file"; filename="x\u202e\u2066y.txt"'.encode(), "xy.txt"),
        (b"form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.txt", "€.txt"),
        (b"form-data; name=\"file\"; filename*=UTF-8''..%2F..%2Fa%00b%0A.txt", "ab.txt"),
        (b'form-data; name="file"; filename="EUR.txt"; filename*=UTF-8\'\'%E2%82%AC.txt', "€.txt"),
        (b'form-data; name="file"; filename=""', "upload"),
        (b'form-data; name="file"; filename="\xff\xfe.txt"', "\ufffd\ufffd.txt"),
        (b'form-data; name="file"; filename="C:\\x\\y.txt"', "y.txt"),
        # aiohttp percent-encodes the name; browsers (WHATWG) encode '"', CR and LF.
        (b'form-data; name="file"; filename="caf%C3%A9%20menu.txt"', "caf\u00e9 menu.txt"),
        (b'form-data; name="file"; filename="say %22hi%22.txt"', 'say "hi".txt'),
        (b'form-data; name="file"; filename="two%0D%0Alines.txt"', "twolines.txt"),
        (
            'form-data; name="file"; filename="r\u00e9sum\u00e9 100%.txt"'.encode(),
            "r\u00e9sum\u00e9 100%.txt",
        ),
        (b'form-data; name="file"; filename="50%off %FF.txt"', "50%off %FF.txt"),
        (
            b'form-data; name="file"; filename="' + quote("\u00e9" * 200 + ".txt", safe="").encode() + b'"',
            "\u00e9" * 125 + ".txt",
        ),
    ],
    ids=[
        "control-chars",
        "tab",
        "bidi",
        "rfc2231",
        "rfc2231-path-and-controls",
        "rfc2231-wins-over-fallback",
        "empty",
        "invalid-utf8",
        "raw-backslashes",
        "aiohttp-percent-encoded",
        "whatwg-quotes",
        "whatwg-crlf",
        "raw-utf8-literal-percent",
        "percent-not-an-escape",
        "aiohttp-long-name-keeps-extension",
    ],
)
def test_raw_content_disposition_filenames_are_sanitised(
    client: TestClient, data_dir: Path, disposition: bytes, expected: str
) -> None:
    body = multipart(part(None, b"hi\n", disposition=b"Content-Disposition: " + disposition + b"\r\n"))
    response = client.post("/v1/jobs", content=body, headers=MULTIPART)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["file"]["name"] == expected
    assert client.get(f"/v1/jobs/{job['id']}").json()["file"]["name"] == expected
    assert_only_upload(data_dir, job["id"])
