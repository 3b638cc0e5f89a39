"""The dashboard's pages: the HTML shell at ``/`` and the fragments htmx swaps into it.

The shell (``GET /``) and the static assets hold no data and load without the API
key (:data:`statekit.api.guard.PUBLIC_PATHS`); every fragment under ``/dashboard/``
passes the Guard like any route, so it needs the key (the page sends it as
``X-API-Key``). The fragments read through the API's own routes and readers (the
trading views, the reconcile router, the snapshots router, ``store.history``), so
the dashboard shows exactly what the REST API answers. Bad input gets the API's
error shape (a 4xx JSON body), which the page shows in its error banner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import pydantic
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from statekit.api.dashboard.charts import step_chart
from statekit.api.dashboard.history import numeric_series, timeline
from statekit.api.dependencies import ApiKeyDep, RedactorDep, StoreDep, TradingDep
from statekit.api.errors import ApiError
from statekit.api.models import SnapshotIn
from statekit.api.routers import health as health_routes
from statekit.api.routers import reconcile as reconcile_routes
from statekit.api.routers import snapshots as snapshot_routes
from statekit.api.routers import states as state_routes
from statekit.api.routers import trading as trading_routes
from statekit.codec import MAX_KEY_LENGTH
from statekit.errors import StatekitError
from statekit.store import RESERVED_PREFIX
from statekit.trading.reconcile.positions import discrepancies

__all__ = ["HISTORY_LIMIT", "router", "templates"]

HISTORY_LIMIT = 100
"""The key page shows (and charts) this many newest versions."""

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

router = APIRouter(include_in_schema=False)

StateIdQuery = Annotated[
    str, Query(min_length=1, max_length=MAX_KEY_LENGTH, description="The store key.")
]
SnapshotIdQuery = Annotated[str, Query(min_length=1, max_length=MAX_KEY_LENGTH)]


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    """Render ``name``; ``view`` (default: this GET's URL) is what a live change re-fetches."""
    if "view" not in context:
        query = request.url.query
        context["view"] = request.url.path + (f"?{query}" if query else "")
    return templates.TemplateResponse(request, name, context)


@router.get("/", response_class=HTMLResponse)
async def shell(request: Request, key: ApiKeyDep) -> HTMLResponse:
    """The page itself: navigation, the login form, and where the fragments go."""
    return _page(request, "shell.html", key_required=key.required)


@router.get("/dashboard/overview", response_class=HTMLResponse)
async def overview(
    request: Request, store: StoreDep, trading: TradingDep, redactor: RedactorDep
) -> HTMLResponse:
    """Positions, open orders, balances, the portfolio, and the store's health."""
    positions = await trading_routes.positions(store, trading)
    orders = await trading_routes.orders(store, trading, None)
    balances = await trading_routes.balances(store, trading)
    health = await health_routes.health(Response(), store, redactor)
    portfolio, portfolio_error = None, None
    try:
        portfolio = await trading.portfolio()
    except (StatekitError, pydantic.ValidationError) as exc:
        portfolio_error = redactor.text(str(exc))
    open_orders = {k: o for k, o in orders.orders.items() if not o.status.final}
    pnls = [p.unrealized_pnl for p in positions.positions.values() if p.unrealized_pnl is not None]
    return _page(
        request,
        "overview.html",
        positions=positions,
        position_keys={s: trading.positions.key(s) for s in positions.positions},
        open_orders=open_orders,
        order_keys={i: trading.orders.key(i) for i in open_orders},
        unreadable_orders=orders.unreadable,
        balances=balances,
        balance_keys={a: trading.balances.key(a) for a in balances.balances},
        portfolio=portfolio,
        portfolio_key=trading.portfolio_key,
        portfolio_error=portfolio_error,
        unrealized=sum(pnls) if pnls else None,
        health=health,
    )


@router.get("/dashboard/reconciliation", response_class=HTMLResponse)
async def reconciliation(
    request: Request, store: StoreDep, trading: TradingDep, redactor: RedactorDep
) -> HTMLResponse:
    """Intents with their condition and legs, the engines, and the positions' discrepancies."""
    intents = await reconcile_routes.list_intents(store)
    engines = await reconcile_routes.reconcile_metrics(store, redactor)
    found, log_error = [], None
    try:
        found = await discrepancies(store, limit=50, prefix=trading.prefix)
    except StatekitError as exc:
        log_error = redactor.text(str(exc))
    now = datetime.now(UTC)
    ages = {
        scope: (now - m.updated_at).total_seconds() if m.updated_at else None
        for scope, m in engines.items()
    }
    return _page(
        request,
        "reconciliation.html",
        intents=intents,
        engines=engines,
        ages=ages,
        discrepancies=found,
        discrepancy_error=log_error,
    )


@router.get("/dashboard/keys", response_class=HTMLResponse)
async def keys(
    request: Request,
    store: StoreDep,
    prefix: Annotated[str, Query(max_length=MAX_KEY_LENGTH)] = "",
) -> HTMLResponse:
    """Live keys under ``prefix`` (the first page), to pick one to look at."""
    page = await state_routes.list_states(store, prefix=prefix, state_type=None, limit=200)
    return _page(request, "keys.html", prefix=prefix, page=page)


def _utc(moment: datetime | None) -> datetime | None:
    """The form's ``datetime-local`` has no offset: the page says it is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


@router.get("/dashboard/key", response_class=HTMLResponse)
async def key_page(
    request: Request,
    store: StoreDep,
    state_id: StateIdQuery,
    as_of: Annotated[
        datetime | None, Query(description="A moment (read as UTC without an offset).")
    ] = None,
) -> HTMLResponse:
    """One key: its history with diffs, its value at a moment, and charts of its numbers."""
    if state_id.startswith(RESERVED_PREFIX):
        raise ApiError(404, f"{state_id!r} has no history", key=state_id)
    records = await store.history(state_id, limit=HISTORY_LIMIT)
    if not records:
        raise ApiError(404, f"{state_id!r} has no history", key=state_id)
    moment = _utc(as_of)
    then = None if moment is None else await store.get(state_id, as_of=moment)
    series = numeric_series(records)
    return _page(
        request,
        "key.html",
        state_id=state_id,
        head=records[0],
        versions=timeline(records),
        more=len(records) == HISTORY_LIMIT,
        as_of=moment,
        then=then,
        charts=[step_chart(path, points) for path, points in series.items()],
    )


@router.get("/dashboard/snapshots", response_class=HTMLResponse)
async def snapshots(request: Request, store: StoreDep) -> HTMLResponse:
    """Every snapshot, with a form to take one."""
    listed = await snapshot_routes.list_snapshots(store)
    return _page(request, "snapshots.html", snapshots=list(reversed(listed.items)))


@router.post("/dashboard/snapshots", response_class=HTMLResponse)
async def take_snapshot(request: Request, store: StoreDep) -> HTMLResponse:
    """Take a snapshot from the form (``description``, ``prefix``), then list them all."""
    fields = parse_qs((await request.body()).decode(errors="replace"))
    try:
        body = SnapshotIn(
            description=fields.get("description", [""])[0],
            prefix=fields.get("prefix", [""])[0],
        )
    except pydantic.ValidationError as exc:
        raise ApiError(422, str(exc.errors()[0]["msg"]), reason="bad snapshot form") from None
    await snapshot_routes.create_snapshot(store, body)
    listed = await snapshot_routes.list_snapshots(store)
    return _page(
        request,
        "snapshots.html",
        snapshots=list(reversed(listed.items)),
        view="/dashboard/snapshots",
    )


@router.get("/dashboard/snapshots/diff", response_class=HTMLResponse)
async def snapshot_diff(
    request: Request, store: StoreDep, snapshot_id: SnapshotIdQuery
) -> HTMLResponse:
    """What changed from the snapshot to the live state."""
    diff = await snapshot_routes.diff_snapshot(snapshot_id, store, None)
    return _page(request, "snapshot_diff.html", diff=diff, confirm=False)


@router.get("/dashboard/snapshots/restore", response_class=HTMLResponse)
async def confirm_restore(
    request: Request, store: StoreDep, snapshot_id: SnapshotIdQuery
) -> HTMLResponse:
    """The confirm step: what a restore would change, and the button that does it."""
    diff = await snapshot_routes.diff_snapshot(snapshot_id, store, None)
    return _page(request, "snapshot_diff.html", diff=diff, confirm=True)


@router.post("/dashboard/snapshots/restore", response_class=HTMLResponse)
async def restore(request: Request, store: StoreDep, snapshot_id: SnapshotIdQuery) -> HTMLResponse:
    """Restore the snapshot (after the confirm step) and say what it changed."""
    restored = await snapshot_routes.restore_snapshot(snapshot_id, store)
    return _page(request, "restored.html", restored=restored, view="")
