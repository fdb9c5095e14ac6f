"""``/docs`` (Swagger UI), with its script, stylesheet and icon served by this server from the
``fastapi-offline`` package (at ``/docs/assets``) instead of a CDN: the API docs work without
internet, as the dashboard does. Public, like ``/openapi.json``.

No ``/redoc``: ReDoc's bundle fetches its logo from cdn.redoc.ly whatever it is told, which the
docs' Content-Security-Policy refuses (and which fails without internet); one UI is enough."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS = "/docs"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
ASSETS = "/docs/assets"
#: swagger-ui-bundle.js, swagger-ui.css, favicon.png (and redoc.standalone.js, not used)
ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"

router = APIRouter(include_in_schema=False)


def _urls(request: Request) -> tuple[str, str]:
    """The OpenAPI document's URL and the assets' prefix, behind a proxy's root path too."""
    root = request.scope.get("root_path", "")
    return f"{root}{request.app.openapi_url}", f"{root}{ASSETS}"


@router.get(DOCS)
async def swagger_ui(request: Request) -> HTMLResponse:
    openapi, assets = _urls(request)
    return get_swagger_ui_html(
        openapi_url=openapi,
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{request.scope.get('root_path', '')}{OAUTH2_REDIRECT}",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon.png",
        # no validator badge: Swagger UI would fetch it from validator.swagger.io
        swagger_ui_parameters={"validatorUrl": None, **(request.app.swagger_ui_parameters or {})},
    )


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


def install(app: FastAPI) -> None:
    """Serve the docs pages and their assets on ``app`` (made with ``docs_url=redoc_url=None``)."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=ASSET_DIR), name="docs-assets")
