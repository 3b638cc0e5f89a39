"""The live dashboard served at ``/`` by ``statekit serve`` (docs/dashboard.md).

Server-rendered HTML (Jinja2 templates) that htmx swaps into one page, live over the
API's own WebSocket (``/ws``), with inline SVG charts. No build step and no CDN: htmx
is vendored from the npm registry with its license under ``static/vendor/`` and ships
in the wheel as package data.

:func:`install` adds the pages (:mod:`.routes`) and the static assets to an app.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from statekit.api.dashboard.routes import router

__all__ = ["STATIC_PATH", "install"]

STATIC_PATH = "/dashboard/static"
"""Where the dashboard's scripts and styles are served (public: they hold no data)."""


def install(app: FastAPI) -> None:
    """Serve the dashboard on ``app``: the shell at ``/``, fragments under ``/dashboard/``."""
    app.include_router(router)
    app.mount(
        STATIC_PATH,
        StaticFiles(directory=Path(__file__).parent / "static"),
        name="dashboard-static",
    )
