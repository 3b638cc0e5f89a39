"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from assets shipped in the wheel.

FastAPI's default pages load their JavaScript and CSS from a CDN, so they are blank
on a host without internet access. These are FastAPI's own pages ("self-hosting
JavaScript and CSS for docs") pointed at copies under ``/api-docs/``, taken unchanged
from the npm registry with their licenses (``static/*/LICENSE*``):

- ``swagger-ui-dist`` 5.35.0 (Apache-2.0): ``swagger-ui-bundle.js``, ``swagger-ui.css``,
  the favicon (no OAuth2 redirect page: the API has no OAuth2 flow);
- ``redoc`` 2.5.4 (MIT): ``bundles/redoc.standalone.js`` (2.x: the major version
  FastAPI's page is written for), without Google Fonts.

Why npm and not a PyPI package: these two files are all that is needed, with no
runtime dependency and no package's private file layout to follow; to update them,
``npm pack swagger-ui-dist@<v> redoc@<v>`` and copy the same files.

The pages, their assets and ``/openapi.json`` answer without the API key
(:data:`statekit.api.guard.PUBLIC_PATHS`), so a browser can open them; the routes
they document still need it: the Authorize button takes it (``X-API-Key`` or a
bearer token) and "Try it out" sends it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

__all__ = ["ASSETS_PREFIX", "DOCS_PATHS", "install"]

ASSETS_PREFIX: Final = "/api-docs"
"""Where the assets are served: ``/api-docs/swagger-ui/...``, ``/api-docs/redoc/...``."""
DOCS_PATHS: Final = frozenset({"/docs", "/redoc", "/openapi.json"})
"""The documentation's own paths (the OpenAPI schema included)."""

STATIC = Path(__file__).with_name("static")


def install(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets on ``app`` (created with
    ``docs_url=None, redoc_url=None``); not part of the OpenAPI schema."""
    app.mount(ASSETS_PREFIX, StaticFiles(directory=STATIC), name="api-docs")
    title = f"{app.title} {app.version}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        assets = f"{root}{ASSETS_PREFIX}/swagger-ui"
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            oauth2_redirect_url=None,
            # No badge from validator.swagger.io: nothing leaves the host.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        assets = f"{root}{ASSETS_PREFIX}"
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{assets}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
