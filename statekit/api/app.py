"""The REST + WebSocket API over one open store: :func:`create_app`.

Routes, status codes and examples are in docs/api.md. The app does not own the
store: whoever opened it closes it (:func:`statekit.api.serve` does both).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import quote

import pydantic
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Response, WebSocket
from fastapi.responses import PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPBearer

import statekit
from statekit.api.errors import RETRY_AFTER_SECONDS, ApiError, install_handlers, responses
from statekit.api.guard import ApiKey, Guard, JsonCORSMiddleware
from statekit.api.models import (
    BalancesOut,
    CacheStatsOut,
    ChangedValue,
    ErrorBody,
    HealthOut,
    HistoryOut,
    IntentListOut,
    IntentOut,
    OrdersOut,
    PositionsOut,
    ReconcileMetricsOut,
    RestoreOut,
    SnapshotDetailOut,
    SnapshotDiffOut,
    SnapshotIn,
    SnapshotListOut,
    SnapshotOut,
    StateIn,
    StateListOut,
    StateOut,
    intent_out,
    snapshot_out,
    state_out,
)
from statekit.api.ws import ChangeHub
from statekit.backend import ANY, JSON, Expect, Record
from statekit.codec import MAX_KEY_LENGTH, MAX_KIND_LENGTH, MAX_VERSION
from statekit.config import Settings
from statekit.errors import BackendUnavailable, ConflictError, StatekitError, ValidationError
from statekit.redact import Redactor
from statekit.snapshots import SNAPSHOT_KIND, SNAPSHOT_PREFIX
from statekit.store import RESERVED_PREFIX, StateStore
from statekit.tiered import TieredBackend
from statekit.tiered.metrics import fallback_prometheus
from statekit.trading import kinds
from statekit.trading.locks import KeyedLocks
from statekit.trading.models import OrderStatus
from statekit.trading.reconcile import (
    Intent,
    IntentStatus,
    IntentStore,
    prometheus_text,
    read_metrics,
)
from statekit.trading.reconcile.intents import INTENT_PREFIX, STATUS_PREFIX, check_intent_id
from statekit.trading.state import Section, TradingState

__all__ = [
    "HEALTH_TIMEOUT_SECONDS",
    "MAX_PAGE",
    "PROMETHEUS_CONTENT_TYPE",
    "PrometheusResponse",
    "create_app",
    "redactor_for",
]

log = logging.getLogger("statekit.api")

HEALTH_TIMEOUT_SECONDS = 5.0
"""``GET /health`` answers 503 when the backend takes longer than this."""
MAX_PAGE = 1000
"""The largest ``limit`` a list or history request may ask for."""

M = TypeVar("M", bound=pydantic.BaseModel)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of ``GET /metrics``: Prometheus' text exposition format 0.0.4."""


class PrometheusResponse(PlainTextResponse):
    """A Prometheus text exposition (``GET /metrics``)."""

    media_type = PROMETHEUS_CONTENT_TYPE


def _json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """:func:`responses` for a route whose success is not JSON: FastAPI would document
    its errors in the route's media type, but every error body is JSON."""
    return {
        status: {
            "description": doc["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        for status, doc in responses(*statuses).items()
    }


class _Exists(enum.Enum):
    EXISTS = "*"


_EXISTS: Final = _Exists.EXISTS
Precondition = int | _Exists | None
"""What the conditional headers ask: a version, "the key exists", 0 (create-only), or nothing."""


def redactor_for(settings: Settings) -> Redactor:
    """What must never leave the server: the API key, and the secrets of every store URL."""
    key = settings.api.api_key
    urls = list(settings.mirrors)
    with contextlib.suppress(StatekitError):  # no URL can be built: no secret in one either
        urls.append(settings.store_url())
    shared = settings.cache.shared_url
    if shared is not None:
        urls.append(shared.get_secret_value())
    return Redactor([key.get_secret_value()] if key else [], urls)


IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='Write only if the head is this version: `"3"`; `*`: only if it exists.',
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(alias="If-None-Match", description="`*`: create only (the key has no live value)."),
]
StateId = Annotated[
    str, Path(description="The store key; it may hold `/` (e.g. `position/EURUSD`).")
]
SnapshotId = Annotated[str, Path(description="The snapshot id.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many items.")]


# Documents the key in OpenAPI (the Guard middleware is what enforces it).
_HEADER_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")
_BEARER_KEY = HTTPBearer(auto_error=False, description="The API key as a bearer token.")


def _documented_key(
    _header: Annotated[str | None, Depends(_HEADER_KEY)],
    _bearer: Annotated[Any, Depends(_BEARER_KEY)],
) -> None:
    return None


# -- conditional requests --------------------------------------------------------------------


def _etag(record: Record) -> str:
    return f'"{record.version}"'


def _tagged(record: Record, response: Response) -> StateOut:
    response.headers["ETag"] = _etag(record)
    return state_out(record)


_DIGITS = re.compile("[0-9]+")
_OPAQUE_TAG = re.compile("[\x21\x23-\x7e]*")
"""What may stand between the quotes of an ETag here: printable ASCII but ``"``."""


def _precondition(if_match: str | None, if_none_match: str | None) -> Precondition:
    """Read ``If-Match`` / ``If-None-Match`` (RFC 9110) into what a write expects.

    ``If-Match: "<version>"``: the head must be that version. ``If-Match: *``: the
    key must have a live value. ``If-None-Match: *``: it must not (create only).
    """
    if if_match is not None and if_none_match is not None:
        raise ApiError(400, "send If-Match or If-None-Match, not both", code="bad_precondition")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise ApiError(
                400,
                "on a write, If-None-Match supports only * (create only)",
                code="bad_precondition",
            )
        return 0
    if if_match is None:
        return None
    tag = if_match.strip()
    if tag == "*":
        return _EXISTS
    if "," in tag:
        raise ApiError(400, "If-Match takes one ETag", code="bad_precondition")
    if tag.startswith("W/"):
        raise ApiError(
            400, 'If-Match needs a strong ETag, e.g. If-Match: "3"', code="bad_precondition"
        )
    quoted = len(tag) >= 2 and tag[0] == tag[-1] == '"'
    if quoted and _OPAQUE_TAG.fullmatch(tag[1:-1]):
        tag = tag[1:-1]
    elif quoted or not _DIGITS.fullmatch(tag):
        # Not str.isdigit(): it is true for "²" and other digits int() refuses.
        raise ApiError(
            400, f'If-Match {tag[:40]!r} is not an ETag, e.g. "3"', code="bad_precondition"
        )
    # An ETag this server never issued matches nothing: version 0 is never a live value.
    return int(tag) if _DIGITS.fullmatch(tag) and len(tag) < 19 and int(tag) > 0 else -1


def _failed(key: str, precondition: Precondition, actual: int, deleted: bool = False) -> ApiError:
    if precondition == 0:
        message = f"{key!r} exists already (If-None-Match: *)"
    elif precondition is _EXISTS:
        message = f"{key!r} has no live value (If-Match: *)"
    else:
        message = f"{key!r} is at version {actual}, not {precondition} (If-Match)"
    expected = precondition if isinstance(precondition, int) else None
    return ApiError(412, message, key=key, expected=expected, actual=actual)


async def _expect(store: StateStore, key: str, precondition: Precondition) -> Expect:
    """The ``expect=`` of a write under ``precondition`` (412 when it cannot hold)."""
    if precondition is None:
        return ANY
    if precondition is _EXISTS:
        head = await store.get(key)
        if head is None:
            raise _failed(key, precondition, 0)
        return head.version
    assert isinstance(precondition, int)
    if precondition < 0:
        head = await store.get(key)
        raise _failed(key, precondition, head.version if head else 0)
    return precondition


def _reserved(key: str) -> bool:
    return key.startswith(RESERVED_PREFIX)


def _not_found(key: str, what: str = "no live value") -> ApiError:
    return ApiError(404, f"{key!r} has {what}", key=key)


# -- the app -------------------------------------------------------------------------------


def create_app(
    store: StateStore,
    settings: Settings,
    *,
    locks: KeyedLocks | None = None,
    hub: ChangeHub | None = None,
) -> FastAPI:
    """The REST + WebSocket API over ``store`` (which the app does not close).

    :param store: an open store.
    :param settings: ``settings.api`` gives the API key, CORS origins and body limit;
        the store URLs in ``settings`` are secrets kept out of every response.
    :param locks: the process's :class:`KeyedLocks`, reported by ``GET /stats/locks``.
    :param hub: the WebSocket change hub (default: a new one). The app's lifespan
        starts it on ``store`` and stops it.
    """
    api = settings.api
    key = ApiKey(api.api_key.get_secret_value() if api.api_key else None)
    redactor = redactor_for(settings)
    hub = hub or ChangeHub()
    trading = TradingState(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start(store)
        try:
            yield
        finally:
            await hub.stop()

    secured = [Depends(_documented_key)] if key.required else []
    # Every route but /health needs the key; every route may meet these.
    router = APIRouter(dependencies=secured, responses=responses(401) if key.required else {})

    app = FastAPI(
        title="statekit",
        version=statekit.__version__,
        summary="Versioned trading state: states, history, snapshots, trading views, "
        "reconciliation, live changes.",
        lifespan=lifespan,
        responses=responses(413, 422, 501, 503),
    )
    app.state.store = store
    app.state.hub = hub
    app.state.locks = locks
    install_handlers(app, redactor)
    app.add_middleware(Guard, key=key, max_body_bytes=api.max_body_bytes)
    if api.cors_origins:
        app.add_middleware(
            JsonCORSMiddleware,
            allow_origins=list(api.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "X-API-Key",
                "Authorization",
                "Content-Type",
                "If-Match",
                "If-None-Match",
            ],
            expose_headers=["ETag", "Retry-After"],
        )

    # -- health ----------------------------------------------------------------------------

    @app.get(
        "/health",
        response_model=HealthOut,
        tags=["health"],
        responses={503: {"model": HealthOut, "description": "The backend is unavailable."}},
    )
    async def health(response: Response) -> HealthOut:
        """Whether the store answers (no API key needed): `ok`, `degraded` (the primary is
        unreachable or the fallback journal is draining; writes are still taken) or
        `unavailable` (503)."""
        out = HealthOut(
            status="ok",
            backend=store.backend.name,
            latency_ms=0.0,
            version=statekit.__version__,
            capabilities=sorted(c.value for c in store.capabilities),
        )
        started = asyncio.get_running_loop().time()
        problem: str | None = None
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                found = await store.health()
            out.latency_ms = round(found.latency_ms, 3)
            if not found.ok:
                problem = "the backend reports itself unhealthy"
            elif found.detail.get("degraded"):
                # Still serving (writes go to the fallback journal): 200, but said.
                out.status = "degraded"
                out.degraded = redactor.text(str(found.detail["degraded"]))
        except TimeoutError:
            problem = f"the backend did not answer within {HEALTH_TIMEOUT_SECONDS:g}s"
        except StatekitError as exc:
            problem = redactor.text(str(exc) or type(exc).__name__)
        if problem is not None:
            out.status = "unavailable"
            out.latency_ms = round((asyncio.get_running_loop().time() - started) * 1000, 3)
            out.error = ErrorBody(code="backend_unavailable", message=problem)
            response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return out

    # -- states ----------------------------------------------------------------------------

    @router.post(
        "/states",
        status_code=201,
        response_model=StateOut,
        tags=["states"],
        responses=responses(400, 409, 412),
    )
    async def put_state(
        body: StateIn,
        response: Response,
        if_match: IfMatch = None,
        if_none_match: IfNoneMatch = None,
    ) -> StateOut:
        """Store `data` as the new version of `state_id` (create or update).

        The response's `ETag` is the new version; send it back as `If-Match` to
        update only what you read (412 when someone else wrote meanwhile).
        """
        precondition = _precondition(if_match, if_none_match)
        key = body.state_id
        if body.data is None:
            raise ApiError(
                422,
                "data must not be null; use DELETE /states/{state_id} to remove a key",
                key=key,
                reason="None value",
            )
        meta: dict[str, JSON] = {}
        if body.description is not None:
            meta["note"] = body.description
        if body.user_id is not None:
            meta["by"] = body.user_id
        expect = await _expect(store, key, precondition)
        try:
            record = await store.put(key, body.data, kind=body.state_type, meta=meta, expect=expect)
        except ConflictError as exc:
            if precondition is None or exc.key != key:
                raise
            raise _failed(key, precondition, exc.actual) from None
        response.headers["Location"] = "/states/" + quote(key, safe="/")
        return _tagged(record, response)

    @router.get(
        "/states",
        response_model=StateListOut,
        tags=["states"],
    )
    async def list_states(
        prefix: Annotated[
            str, Query(max_length=MAX_KEY_LENGTH, description="Only keys starting with this.")
        ] = "",
        state_type: Annotated[
            str | None,
            Query(
                min_length=1, max_length=MAX_KIND_LENGTH, description="Only values of this kind."
            ),
        ] = None,
        limit: Limit = 100,
        cursor: Annotated[
            str | None, Query(description="The `next_cursor` of the previous page.")
        ] = None,
    ) -> StateListOut:
        """Live keys in key order, one page at a time."""
        if _reserved(prefix):
            raise ApiError(
                422, f"keys under {RESERVED_PREFIX!r} are statekit's own", reason="reserved"
            )
        items: list[StateOut] = []
        next_cursor: str | None = None
        records = store.scan(prefix, state_type)
        try:
            async for record in records:
                if cursor is not None and record.key <= cursor:
                    continue
                if len(items) == limit:
                    next_cursor = items[-1].state_id
                    break
                items.append(state_out(record))
        finally:
            close: Callable[[], Any] | None = getattr(records, "aclose", None)
            if close is not None:
                await close()
        return StateListOut(items=items, next_cursor=next_cursor)

    # Declared before /states/{state_id:path}: a key may hold "/", and this route must win.
    @router.get(
        "/states/{state_id:path}/history",
        response_model=HistoryOut,
        tags=["states"],
        responses=responses(404),
    )
    async def state_history(
        state_id: StateId,
        limit: Limit = 100,
        before: Annotated[
            int | None,
            Query(
                ge=1,
                le=MAX_VERSION,
                description="Only versions below this (the `next_before` of a page).",
            ),
        ] = None,
    ) -> HistoryOut:
        """Versions of `state_id`, newest first (deletions included, `data` null)."""
        if _reserved(state_id):
            raise _not_found(state_id, "no history")
        records = await store.history(state_id, limit=limit, before=before)
        if not records and before is None:
            raise _not_found(state_id, "no history")
        next_before = (
            records[-1].version if len(records) == limit and records[-1].version > 1 else None
        )
        return HistoryOut(
            state_id=state_id, items=[state_out(r) for r in records], next_before=next_before
        )

    @router.get(
        "/states/{state_id:path}",
        response_model=StateOut,
        tags=["states"],
        responses=responses(404, 410),
    )
    async def get_state(
        state_id: StateId,
        response: Response,
        state_type: Annotated[
            str | None, Query(description="404 unless the value is of this kind.")
        ] = None,
        as_of: Annotated[
            datetime | None,
            Query(
                description="ISO 8601 time with an offset (e.g. `2025-01-18T12:00:00Z`): "
                "the version current then."
            ),
        ] = None,
    ) -> StateOut:
        """The live version of `state_id` (or the one current at `as_of`), with its `ETag`."""
        if _reserved(state_id):
            raise _not_found(state_id)
        record = await store.get(state_id, as_of=as_of)
        if record is None:
            raise _not_found(state_id, "no live value" if as_of is None else "no value then")
        if state_type is not None and record.kind != state_type:
            raise ApiError(
                404,
                f"{state_id!r} is a {record.kind!r}, not a {state_type!r}",
                key=state_id,
                state_type=record.kind,
            )
        return _tagged(record, response)

    @router.delete(
        "/states/{state_id:path}",
        response_model=StateOut,
        tags=["states"],
        responses=responses(400, 404, 412),
    )
    async def delete_state(
        state_id: StateId,
        response: Response,
        if_match: IfMatch = None,
        if_none_match: IfNoneMatch = None,
    ) -> StateOut:
        """Delete `state_id`: a tombstone version (returned); its history stays."""
        precondition = _precondition(if_match, if_none_match)
        if _reserved(state_id):
            raise _not_found(state_id)
        head = await store.get(state_id)
        if head is None:
            if isinstance(precondition, int) and precondition != 0:
                raise _failed(state_id, precondition, 0)
            raise _not_found(state_id)
        if precondition == 0:
            raise _failed(state_id, precondition, head.version)
        expect = await _expect(store, state_id, precondition)
        try:
            record = await store.delete(state_id, expect=expect)
        except ConflictError as exc:
            if precondition is None:
                raise
            raise _failed(state_id, precondition, exc.actual) from None
        return _tagged(record, response)

    # -- snapshots -------------------------------------------------------------------------

    async def captured(snapshot_id: str) -> dict[str, JSON]:
        try:
            return await store.snapshots.get(snapshot_id)
        except ValidationError as exc:
            if exc.reason == "unknown snapshot":
                raise ApiError(
                    404, f"no snapshot {snapshot_id!r}", snapshot_id=snapshot_id
                ) from None
            raise

    @router.post(
        "/snapshots",
        status_code=201,
        response_model=SnapshotOut,
        tags=["snapshots"],
        responses=responses(400, 409),
    )
    async def create_snapshot(
        body: Annotated[SnapshotIn | None, Body()] = None,
    ) -> SnapshotOut:
        """Capture every live key (under `prefix`)."""
        body = body or SnapshotIn()
        if _reserved(body.prefix):
            raise ApiError(
                422, f"keys under {RESERVED_PREFIX!r} are statekit's own", reason="reserved"
            )
        try:
            info = await store.snapshots.create(
                body.description, prefix=body.prefix, snapshot_id=body.snapshot_id or None
            )
        except ConflictError as exc:
            if exc.key != SNAPSHOT_PREFIX + (body.snapshot_id or ""):
                raise
            raise ApiError(
                409,
                f"snapshot {body.snapshot_id!r} exists already; choose another snapshot_id",
                snapshot_id=body.snapshot_id,
            ) from None
        return snapshot_out(info)

    @router.get("/snapshots", response_model=SnapshotListOut, tags=["snapshots"])
    async def list_snapshots() -> SnapshotListOut:
        """Every snapshot, oldest first."""
        return SnapshotListOut(items=[snapshot_out(i) for i in await store.snapshots.list()])

    @router.post(
        "/snapshots/{snapshot_id:path}/restore",
        response_model=RestoreOut,
        tags=["snapshots"],
        responses=responses(404),
    )
    async def restore_snapshot(snapshot_id: SnapshotId) -> RestoreOut:
        """Make the live keys under the snapshot's prefix equal to it (new versions)."""
        await captured(snapshot_id)  # 404 before anything is written
        changed = await store.snapshots.restore(snapshot_id)
        return RestoreOut(snapshot_id=snapshot_id, changed=changed)

    @router.get(
        "/snapshots/{snapshot_id:path}/diff",
        response_model=SnapshotDiffOut,
        tags=["snapshots"],
        responses=responses(404),
    )
    async def diff_snapshot(
        snapshot_id: SnapshotId,
        against: Annotated[
            str | None, Query(description="Another snapshot (default: the live state).")
        ] = None,
    ) -> SnapshotDiffOut:
        """What changed from the snapshot to `against` (or to the live state)."""
        await captured(snapshot_id)
        if against is not None:
            await captured(against)
        diff = await store.snapshots.diff(snapshot_id, against)
        return SnapshotDiffOut(
            snapshot_id=snapshot_id,
            against=against,
            added=diff.added,
            removed=diff.removed,
            changed={k: ChangedValue(before=b, after=a) for k, (b, a) in diff.changed.items()},
        )

    @router.get(
        "/snapshots/{snapshot_id:path}",
        response_model=SnapshotDetailOut,
        tags=["snapshots"],
        responses=responses(404),
    )
    async def get_snapshot(snapshot_id: SnapshotId) -> SnapshotDetailOut:
        """One snapshot with the values it captured."""
        states = await captured(snapshot_id)
        record = await store.get(SNAPSHOT_PREFIX + snapshot_id)
        if record is None or record.kind != SNAPSHOT_KIND or not isinstance(record.data, dict):
            raise ApiError(404, f"no snapshot {snapshot_id!r}", snapshot_id=snapshot_id)
        return SnapshotDetailOut(
            snapshot_id=snapshot_id,
            description=str(record.data.get("description", "")),
            prefix=str(record.data.get("prefix", "")),
            created_at=record.at,
            keys=len(states),
            states=states,
        )

    # -- trading views ---------------------------------------------------------------------

    async def section_items(section: Section[M], *kinds_: str) -> tuple[dict[str, M], list[str]]:
        """The readable items of ``section`` (of ``kinds_``) and the keys that are not."""
        items: dict[str, M] = {}
        unreadable: list[str] = []
        async for record in store.scan(trading.prefix + section.folder):
            if record.kind not in kinds_:
                continue  # a user's own value under the folder, not a trading item
            try:
                items[section.name_of(record.key)] = section.parse(record)
            except (ValidationError, pydantic.ValidationError):
                unreadable.append(record.key)
        return items, unreadable

    @router.get(
        "/positions",
        response_model=PositionsOut,
        response_model_exclude_none=True,
        tags=["trading"],
    )
    async def positions() -> PositionsOut:
        """Every position of the trading state, by symbol."""
        items, unreadable = await section_items(
            trading.positions, kinds.POSITION, kinds.LEGACY_POSITION
        )
        return PositionsOut(positions=items, unreadable=unreadable)

    @router.get(
        "/orders",
        response_model=OrdersOut,
        response_model_exclude_none=True,
        tags=["trading"],
    )
    async def orders(
        status: Annotated[
            OrderStatus | None, Query(description="Only orders in this status.")
        ] = None,
    ) -> OrdersOut:
        """Every order, by client order id."""
        items, unreadable = await section_items(trading.orders, kinds.ORDER)
        if status is not None:
            items = {k: o for k, o in items.items() if o.status == status}
        return OrdersOut(orders=items, unreadable=unreadable)

    @router.get(
        "/balances",
        response_model=BalancesOut,
        response_model_exclude_none=True,
        tags=["trading"],
    )
    async def balances() -> BalancesOut:
        """Every balance, by asset."""
        items, unreadable = await section_items(trading.balances, kinds.BALANCE)
        return BalancesOut(balances=items, unreadable=unreadable)

    # -- reconciliation --------------------------------------------------------------------

    async def reconcile_metrics() -> dict[str, ReconcileMetricsOut]:
        """Every scope's stored metrics snapshot; one that does not parse is left out
        (and logged): it must not hide the others, nor break a Prometheus scrape."""
        found: dict[str, ReconcileMetricsOut] = {}
        for scope, snapshot in (await read_metrics(store)).items():
            try:
                found[scope] = ReconcileMetricsOut.model_validate(snapshot)
            except pydantic.ValidationError as exc:
                log.warning(
                    "reconcile metrics of scope %r do not parse, left out: %s",
                    scope,
                    redactor.text(str(exc.errors()[0]["msg"])),
                )
        return found

    @router.get(
        "/reconcile/metrics",
        response_model=dict[str, ReconcileMetricsOut],
        tags=["reconcile"],
    )
    async def get_reconcile_metrics() -> dict[str, ReconcileMetricsOut]:
        """Every scope's reconciliation metrics, by scope (`{}` when no engine has run)."""
        return await reconcile_metrics()

    @router.get(
        "/reconcile/intents",
        response_model=IntentListOut,
        tags=["reconcile"],
    )
    async def list_intents() -> IntentListOut:
        """Every intent with its status, in id order (from the store: no exchange call)."""
        statuses: dict[str, IntentStatus] = {}
        unreadable: list[str] = []
        async for record in store.scan(STATUS_PREFIX, kind=kinds.INTENT_STATUS):
            try:
                status = IntentStatus.from_record(record)
            except pydantic.ValidationError:
                unreadable.append(record.key)
                continue
            statuses[status.intent_id] = status
        items: list[IntentOut] = []
        async for record in store.scan(INTENT_PREFIX, kind=kinds.INTENT):
            try:
                intent = Intent.from_record(record)
            except pydantic.ValidationError:
                unreadable.append(record.key)
                continue
            items.append(intent_out(intent, statuses.get(intent.id)))
        return IntentListOut(items=items, unreadable=unreadable)

    @router.get(
        "/reconcile/intents/{intent_id}",
        response_model=IntentOut,
        tags=["reconcile"],
        responses=responses(404),
    )
    async def get_intent(
        intent_id: Annotated[str, Path(description="The intent's id.")],
    ) -> IntentOut:
        """One intent with its status."""
        try:
            check_intent_id(intent_id)
        except ValidationError:
            # No intent can have this id: it is absent, not a bad request.
            raise ApiError(404, f"no intent {intent_id!r}", intent_id=intent_id) from None
        intents = IntentStore(store)
        intent = await intents.get(intent_id)
        if intent is None:
            raise ApiError(404, f"no intent {intent_id!r}", intent_id=intent_id)
        return intent_out(intent, await intents.status(intent_id))

    @router.get(
        "/metrics",
        response_class=PrometheusResponse,
        tags=["reconcile"],
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {PROMETHEUS_CONTENT_TYPE: {"schema": {"type": "string"}}},
            },
            # Overrides the app's and the router's error docs, which FastAPI would give
            # this route's text/plain media type.
            **_json_errors(413, 422, 501, 503, *((401,) if key.required else ())),
        },
    )
    async def metrics() -> PrometheusResponse:
        """Metrics for Prometheus: reconciliation (`statekit_reconcile_*`, one series per
        scope) and, with a fallback journal, its figures (`statekit_fallback_*`).

        Needs the API key when one is configured, as every route but `/health` does.
        """
        backend = store.backend
        journaled = isinstance(backend, TieredBackend) and backend.fallback is not None
        try:
            found = await reconcile_metrics()
        except BackendUnavailable:
            if not journaled:
                raise
            found = {}  # an outage is when the journal's figures matter most: serve them
        text = prometheus_text({scope: out.model_dump(mode="json") for scope, out in found.items()})
        if isinstance(backend, TieredBackend) and backend.fallback is not None:
            text += fallback_prometheus(await backend.fallback_stats())
        return PrometheusResponse(text)

    # -- statistics ------------------------------------------------------------------------

    @router.get(
        "/stats/locks",
        response_model=dict[str, dict[str, pydantic.JsonValue]],
        tags=["stats"],
    )
    async def lock_stats() -> dict[str, dict[str, JSON]]:
        """Contention per lock name (or family) of the server's KeyedLocks; `{}` if none."""
        return {} if locks is None else locks.as_dict()

    @router.get("/stats/cache", response_model=CacheStatsOut, tags=["stats"])
    async def cache_stats() -> CacheStatsOut:
        """The read caches' counters (null when a cache is off)."""
        detail = (await store.health()).detail

        def section(name: str) -> dict[str, JSON] | None:
            value = detail.get(name)
            return redactor.data(value) if isinstance(value, dict) else None

        return CacheStatsOut(cache=section("cache"), shared_cache=section("shared_cache"))

    @router.get(
        "/stats/ws",
        response_model=dict[str, pydantic.JsonValue],
        tags=["stats"],
    )
    async def ws_stats() -> dict[str, Any]:
        """The WebSocket hub: connections, subscriptions, dropped clients, queues."""
        return hub.stats()

    # -- live changes ----------------------------------------------------------------------

    app.include_router(router)

    @app.websocket("/ws")
    async def changes(websocket: WebSocket) -> None:
        """Subscribe to topics (``states:<kind>``...) and receive every committed change.

        The API key goes in ``X-API-Key`` / ``Authorization: Bearer`` or ``?api_key=``.
        """
        await hub.serve(websocket, authorized=key.allows(websocket.scope))

    return app
