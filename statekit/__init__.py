"""statekit: correct, versioned, auditable state for trading systems.

``store = await statekit.open("sqlite:///state.db")`` and go; see README.md.
"""

from typing import TYPE_CHECKING, Any

from statekit.backend import ANY, JSON, Backend, Capability, Guard, Health, Record, Write
from statekit.codec import Codec
from statekit.errors import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    CapabilityError,
    ConfigError,
    ConflictError,
    HistoryUnavailable,
    NotFound,
    PluginError,
    SerializationError,
    StatekitError,
    ValidationError,
)
from statekit.hookspecs import hookimpl, hookspec
from statekit.host import PluginHost
from statekit.opening import open
from statekit.store import Retention, StateStore, Watch

if TYPE_CHECKING:
    from statekit.trading.errors import (
        ExchangeError,
        ExchangeUnavailable,
        FencedOff,
        IdempotencyConflict,
        LockTimeout,
        OrderNotFound,
        OrderRejected,
        RateLimited,
        ReconcileError,
    )

_TRADING_ERRORS = frozenset(
    {
        "ExchangeError",
        "ExchangeUnavailable",
        "FencedOff",
        "IdempotencyConflict",
        "LockTimeout",
        "OrderNotFound",
        "OrderRejected",
        "RateLimited",
        "ReconcileError",
    }
)


def __getattr__(name: str) -> Any:
    # The trading layer's errors, re-exported for ``from statekit import FencedOff``
    # without importing the trading layer with the core (it loads on first use).
    if name in _TRADING_ERRORS:
        from statekit.trading import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'statekit' has no attribute {name!r}")


__all__ = [
    "ANY",
    "JSON",
    "AlreadyExists",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Capability",
    "CapabilityError",
    "Codec",
    "ConfigError",
    "ConflictError",
    "ExchangeError",
    "ExchangeUnavailable",
    "FencedOff",
    "Guard",
    "Health",
    "HistoryUnavailable",
    "IdempotencyConflict",
    "LockTimeout",
    "NotFound",
    "OrderNotFound",
    "OrderRejected",
    "PluginError",
    "PluginHost",
    "RateLimited",
    "ReconcileError",
    "Record",
    "Retention",
    "SerializationError",
    "StateStore",
    "StatekitError",
    "ValidationError",
    "Watch",
    "Write",
    "hookimpl",
    "hookspec",
    "open",
]

__version__ = "0.1.0"
