"""``/``: the web dashboard, a page of plain HTML, CSS and JavaScript (no build step).

The page and its assets are public (they hold no data); everything it shows comes from the
``/v1`` API with the API key the user enters, which the page keeps in ``sessionStorage``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"

router = APIRouter(include_in_schema=False)

#: Served at ``/static``: the page's stylesheet, script and icon.
assets = StaticFiles(directory=STATIC, check_dir=False)


@router.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
