"""The API's request and response bodies (pydantic v2): what the OpenAPI schema documents."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic_core import to_json

from statekit.backend import Record
from statekit.snapshots import SnapshotInfo
from statekit.trading.models import (
    Balance,
    Order,
    OrderSide,
    OrderType,
    Position,
    TimeInForce,
)
from statekit.trading.reconcile.intents import Condition, Intent, IntentStatus, Leg

__all__ = [
    "BalancesOut",
    "CacheStatsOut",
    "ErrorBody",
    "ErrorOut",
    "HealthOut",
    "HistoryOut",
    "IntentListOut",
    "IntentOut",
    "LockStatsOut",
    "OrdersOut",
    "PositionsOut",
    "ReconcileMetricsOut",
    "RestoreOut",
    "SnapshotDetailOut",
    "SnapshotDiffOut",
    "SnapshotIn",
    "SnapshotListOut",
    "SnapshotOut",
    "StateIn",
    "StateListOut",
    "StateOut",
    "intent_out",
    "snapshot_out",
    "state_json",
    "state_out",
]


class _In(BaseModel):
    # A misspelt field ("descripton") is a 422, not silently dropped.
    model_config = ConfigDict(extra="forbid")


class StateIn(_In):
    """``POST /states``: a new version of one key (seed 003's body)."""

    state_id: str = Field(description="The store key, e.g. `position/EURUSD` or `position_EURUSD`.")
    state_type: str = Field(description="What the value is (the record's kind), e.g. `position`.")
    data: JsonValue = Field(description="The value: any JSON except null.")
    description: str | None = Field(
        default=None, description="Why it changed (kept in the version's meta as `note`)."
    )
    user_id: str | None = Field(
        default=None, description="Who changed it (kept in the version's meta as `by`)."
    )


class StateOut(BaseModel):
    """One version of one key. ``data`` is null for a deletion (a tombstone version)."""

    state_id: str
    state_type: str
    version: int
    data: JsonValue
    timestamp: datetime
    description: str | None


def state_out(record: Record) -> StateOut:
    """The API's view of ``record``."""
    note = record.meta.get("note")
    return StateOut(
        state_id=record.key,
        state_type=record.kind,
        version=record.version,
        data=record.data,
        timestamp=record.at,
        description=note if isinstance(note, str) else None,
    )


def state_json(record: Record) -> bytes:
    """The JSON of :func:`state_out` ``(record)``, byte for byte what FastAPI sends for it,
    without building and validating the model (the stored value is JSON already)."""
    note = record.meta.get("note")
    return to_json(
        {
            "state_id": record.key,
            "state_type": record.kind,
            "version": record.version,
            "data": record.data,
            "timestamp": record.at,
            "description": note if isinstance(note, str) else None,
        }
    )


class StateListOut(BaseModel):
    """One page of live keys, in key order. Pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[StateOut]
    next_cursor: str | None


class HistoryOut(BaseModel):
    """Versions of one key, newest first. Pass ``next_before`` as ``before`` for older ones."""

    state_id: str
    items: list[StateOut]
    next_before: int | None


class SnapshotIn(_In):
    """``POST /snapshots``: capture every live key (under ``prefix``)."""

    snapshot_id: str | None = Field(
        default=None, description="The snapshot's id (default: the time plus a random suffix)."
    )
    description: str = ""
    prefix: str = Field(default="", description="Capture only keys starting with this.")


class SnapshotOut(BaseModel):
    """One snapshot, without its contents."""

    snapshot_id: str
    description: str
    prefix: str
    created_at: datetime
    keys: int


def snapshot_out(info: SnapshotInfo) -> SnapshotOut:
    return SnapshotOut(
        snapshot_id=info.id,
        description=info.description,
        prefix=info.prefix,
        created_at=info.created_at,
        keys=info.keys,
    )


class SnapshotListOut(BaseModel):
    """Every snapshot, oldest first."""

    items: list[SnapshotOut]


class SnapshotDetailOut(SnapshotOut):
    """One snapshot with the values it captured, by key."""

    states: dict[str, JsonValue]


class RestoreOut(BaseModel):
    """What a restore changed (each change is a new version, in the history)."""

    snapshot_id: str
    changed: int


class ChangedValue(BaseModel):
    """One key's value in the two states compared."""

    before: JsonValue
    after: JsonValue


class SnapshotDiffOut(BaseModel):
    """What changed from ``snapshot_id`` to ``against`` (null: the live state)."""

    snapshot_id: str
    against: str | None
    added: dict[str, JsonValue]
    removed: dict[str, JsonValue]
    changed: dict[str, ChangedValue]


class PositionsOut(BaseModel):
    """Every position, by symbol (amounts as decimal strings).

    ``unreadable`` lists position keys whose stored value is not a valid position.
    """

    positions: dict[str, Position]
    unreadable: list[str]


class OrdersOut(BaseModel):
    """Orders by id (amounts as decimal strings); ``unreadable`` as for positions."""

    orders: dict[str, Order]
    unreadable: list[str]


class BalancesOut(BaseModel):
    """Balances by asset (amounts as decimal strings); ``unreadable`` as for positions."""

    balances: dict[str, Balance]
    unreadable: list[str]


class ReconcileMetricsOut(BaseModel):
    """One scope's reconciliation metrics, as its engine stored them after its last pass.

    Fields a newer engine adds are passed through as they are.
    """

    model_config = ConfigDict(extra="allow")

    scope: str
    holder: str | None = Field(default=None, description="Who held the scope's lease.")
    passes: int = Field(default=0, description="Full passes run.")
    keys: int = Field(default=0, description="Keys looked at in the last pass.")
    pending: int = Field(default=0, description="Keys not in sync after the last pass.")
    failed: int = Field(default=0, description="Keys in a terminal failure after the last pass.")
    actions: int = Field(default=0, description="Actions taken (orders placed, cancelled...).")
    errors: int = Field(default=0, description="Keys whose reconciliation failed.")
    retries: int = Field(default=0, description="Keys queued again after a failure.")
    terminal: int = Field(default=0, description="Keys that failed terminally.")
    drifts: int = Field(default=0, description="Differences found that nobody asked for.")
    lag_p50_seconds: float | None = Field(
        default=None, description="Median seconds from an intent change to in sync."
    )
    lag_p99_seconds: float | None = None
    lag_samples: int = 0
    last_pass_seconds: float | None = None
    converge_seconds: float | None = Field(
        default=None,
        description="Seconds the last pass with work took to bring every key in sync.",
    )
    last_error: str | None = None
    updated_at: datetime | None = Field(default=None, description="When it was stored.")


class IntentOut(BaseModel):
    """An intent (what the strategy wants) with what the engine last recorded about it.

    The status fields (``observed_generation`` to ``synced_at``) are null until an
    engine has looked at the intent. Amounts are decimal strings.
    """

    id: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: Decimal
    price: Decimal | None
    time_in_force: TimeInForce
    oco_group: str | None
    generation: int = Field(description="Moves on by one with every change of the spec.")
    deleting: bool = Field(description="Deleted: the engine cancels its order, then removes it.")
    created_at: datetime
    changed_at: datetime
    observed_generation: int | None = Field(description="The generation the engine acted on.")
    condition: Condition | None
    reason: str | None
    message: str | None
    filled: Decimal | None = Field(description="Filled over every order sent for it.")
    exchange_order_id: str | None = Field(
        description="The exchange's id of the newest order it accepted."
    )
    last_error: str | None
    since: datetime | None = Field(description="When `condition` last changed.")
    synced_at: datetime | None = Field(description="When the engine last compared it.")
    legs: list[Leg] = Field(description="Every order the engine sent for it.")


def intent_out(intent: Intent, status: IntentStatus | None) -> IntentOut:
    """The API's view of ``intent`` and its status (None: not seen by an engine yet)."""
    spec = intent.spec
    return IntentOut(
        id=intent.id,
        symbol=spec.symbol,
        side=spec.side,
        type=spec.type,
        amount=spec.amount,
        price=spec.price,
        time_in_force=spec.time_in_force,
        oco_group=spec.oco_group,
        generation=intent.generation,
        deleting=intent.deleting,
        created_at=intent.created_at,
        changed_at=intent.changed_at,
        observed_generation=None if status is None else status.observed_generation,
        condition=None if status is None else status.condition,
        reason=None if status is None else status.reason,
        message=None if status is None else status.message,
        filled=None if status is None else status.filled,
        exchange_order_id=None if status is None else status.exchange_order_id,
        last_error=None if status is None else status.last_error,
        since=None if status is None else status.since,
        synced_at=None if status is None else status.synced_at,
        legs=[] if status is None else list(status.legs),
    )


class IntentListOut(BaseModel):
    """Every intent in id order; ``unreadable`` names intent or status keys that do not parse."""

    items: list[IntentOut]
    unreadable: list[str]


class HealthOut(BaseModel):
    """``GET /health``: ``status`` is ``ok``, ``degraded`` (then ``degraded`` says why: the
    primary is unreachable or the fallback journal drains; writes are still taken) or
    ``unavailable`` (then HTTP 503 and ``error``)."""

    status: str
    backend: str
    latency_ms: float
    version: str
    capabilities: list[str]
    degraded: str | None = None
    error: ErrorBody | None = None


class LockStatsOut(BaseModel):
    """Contention statistics per lock name (or family) of the server's KeyedLocks."""

    locks: dict[str, dict[str, JsonValue]]


class CacheStatsOut(BaseModel):
    """The read caches' counters (null when that cache is off)."""

    cache: dict[str, JsonValue] | None
    shared_cache: dict[str, JsonValue] | None


class ErrorBody(BaseModel):
    """What went wrong: a stable ``code``, a message for humans, and fields by error."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(
        description="unauthorized, bad_json, validation_error, not_found, conflict, "
        "precondition_failed, payload_too_large, history_unavailable, "
        "not_supported, backend_unavailable, ..."
    )
    message: str


class ErrorOut(BaseModel):
    """Every error response: ``{"error": {"code": ..., "message": ..., ...fields}}``."""

    error: ErrorBody


HealthOut.model_rebuild()
