"""``/``: the web dashboard, a page of plain HTML, CSS and JavaScript (no build step).

The page and its assets are public (they hold no data); everything it shows comes from the
``/v1`` API with the API key the user enters, which the page keeps in ``sessionStorage``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"

router = APIRouter(include_in_schema=False)


class Assets(StaticFiles):
    """Static files with scripts always served as ``text/javascript``: the page's scripts are ES
    modules, which a browser runs only with a JavaScript type, whatever the host's MIME table says."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if str(full_path).endswith(".js") and "content-type" in response.headers:
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        return response


#: Served at ``/static``: the page's stylesheet, scripts (``app.js`` and its modules in ``js/``)
#: and icon.
assets = Assets(directory=STATIC, check_dir=False)


@router.get("/")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
