"""``/docs`` (Swagger UI), with its script, stylesheet and icon served by this server from the
``fastapi-offline`` package (at ``/docs/assets``) instead of a CDN: the API docs work without
internet, as the dashboard does. Public, like ``/openapi.json``.

No ``/redoc``: ReDoc's bundle fetches its logo from cdn.redoc.ly whatever it is told, which the
docs' Content-Security-Policy refuses (and which fails without internet); one UI is enough.

``/openapi.json`` is served here too, not by FastAPI's own route, so that it can say what this
service asks of a caller now: while it is open (no key made, ``FILEJOBS_REQUIRE_AUTH`` off) each
``/v1`` operation's ``security`` lists no key (``{}``) beside the bearer key, as OpenAPI spells an
optional scheme; once keys are required, the key only. ``app.openapi()`` (tests, the ``405``'s
``Allow``) keeps the key-only document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles

from filejobs.api.deps import ServicesDep

OPENAPI = "/openapi.json"
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


@router.get(OPENAPI)
async def openapi_document(request: Request, services: ServicesDep) -> JSONResponse:
    """The OpenAPI document (as FastAPI's own route serves it), with a key optional while open."""
    schema: dict[str, Any] = request.app.openapi()
    if not await services.auth.arequired():
        schema = with_optional_key(schema)
    root = request.scope.get("root_path", "").rstrip("/")
    if root and request.app.root_path_in_servers:  # behind a proxy's prefix, as FastAPI adds it
        servers = schema.get("servers", [])
        if root not in {server.get("url") for server in servers}:
            schema = {**schema, "servers": [{"url": root}, *servers]}
    return JSONResponse(schema)


def with_optional_key(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``{}`` (no key) added to each operation's ``security`` (a copy)."""
    paths: dict[str, Any] = {}
    for path, item in schema.get("paths", {}).items():
        paths[path] = {
            method: {**operation, "security": [*operation["security"], {}]}
            if isinstance(operation, dict) and "security" in operation
            else operation
            for method, operation in item.items()
        }
    return {**schema, "paths": paths}


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


def install(app: FastAPI) -> None:
    """Serve the OpenAPI document, the docs pages and their assets on ``app`` (made with
    ``openapi_url=docs_url=redoc_url=None``: FastAPI serves none of them)."""
    app.openapi_url = OPENAPI  # what app.openapi() and the docs page read; the route is ours
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=ASSET_DIR), name="docs-assets")
