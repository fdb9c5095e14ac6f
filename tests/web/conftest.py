"""Fixtures for the dashboard tests: the machine's Chromium driven by Playwright (one browser per
module, a fresh context per test, so no storage is shared), and a real ``filejobs serve`` process
per test on its own data directory.

No browser is ever downloaded: without ``/usr/bin/chromium`` (or the ``playwright`` package) the
tests skip, except under ``FILEJOBS_REQUIRE_SERVICES=1``, where that is a failure.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from filejobs import testing
from filejobs.testing import Server, ServerFactory, keys_cli, server_factory
from tests.sample_processors import ALL as TEST_PROCESSORS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where to copy the dashboard screenshot (the README's image). Read now: the suite's autouse
#: fixture removes every FILEJOBS_* variable before each test runs.
SCREENSHOT_TARGET = os.environ.get("FILEJOBS_SCREENSHOT", "")
REQUIRED = os.environ.get("FILEJOBS_REQUIRE_SERVICES") == "1"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}


def _unavailable(reason: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"{reason} (FILEJOBS_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed: the dashboard tests drive the machine's Chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the 'playwright' package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        # launch() gives the browser a fresh temporary profile of its own and removes it on close.
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def new_context(browser: Browser, **options: Any) -> BrowserContext:
    options.setdefault("viewport", DESKTOP)
    context = browser.new_context(reduced_motion="reduce", accept_downloads=True, **options)
    context.set_default_timeout(10_000)
    return context


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = new_context(browser)
    try:
        yield context
    finally:
        context.close()


def watch_errors(page: Page) -> list[str]:
    """Uncaught exceptions of the page's scripts, and anything the server's Content-Security-Policy
    made the browser refuse (it says so on the console), collected for the test's end."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None,
    )
    return errors


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    errors = watch_errors(page)
    yield page
    assert not errors, f"the page's script raised: {errors}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_server(tmp_path: Path, data_dir: Path) -> Iterator[ServerFactory]:
    """``start_server(**FILEJOBS_ENV)``: a started server on ``data_dir`` with the test processors;
    killed at teardown, its log's tail printed (shown when the test failed)."""
    defaults = {
        "FILEJOBS_PROCESSORS": ",".join(TEST_PROCESSORS),
        "FILEJOBS_WORKERS": "1",
        "FILEJOBS_PROGRESS_INTERVAL": "0.1",
        "FILEJOBS_CANCEL_GRACE": "1",
    }
    with server_factory(tmp_path, data_dir, defaults) as start:
        yield start


def restart(server: Server) -> None:
    """Stop the server gracefully (SIGTERM: its event streams end) and start it again on the same
    port and data directory, as a deploy would."""
    server.restart()


def create_key(data_dir: Path, name: str) -> str:
    """``filejobs keys create NAME`` against the data directory's database (migrating it first)."""
    return keys_cli(data_dir, "create", name)


def submit(
    client: httpx.Client,
    name: str,
    content: bytes,
    *,
    processor: str = "inspect",
    params: dict[str, Any] | None = None,
    content_type: str = "application/octet-stream",
) -> dict[str, Any]:
    """Make a job through the API (not the page)."""
    return testing.submit(
        client, content, name=name, processor=processor, params=params or {}, content_type=content_type
    )


def png_bytes(width: int = 96, height: int = 64) -> bytes:
    """A real PNG: a colour gradient with a disc, so the thumbnail is recognisable."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    image.putdata(
        [(int(255 * x / width), int(255 * y / height), 160) for y in range(height) for x in range(width)]
    )
    draw = ImageDraw.Draw(image)
    radius = min(width, height) // 4
    cx, cy = width // 2, height // 2
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
