"""statekit: correct, versioned, auditable state for trading systems.

``store = await statekit.open("sqlite:///state.db")`` and go; see README.md.
"""

from statekit.backend import ANY, JSON, Backend, Capability, Health, Record, Write
from statekit.codec import Codec
from statekit.errors import (
    BackendError,
    BackendUnavailable,
    CapabilityError,
    ConfigError,
    ConflictError,
    ExchangeError,
    ExchangeUnavailable,
    FencedOff,
    HistoryUnavailable,
    IdempotencyConflict,
    LockTimeout,
    OrderNotFound,
    OrderRejected,
    PluginError,
    RateLimited,
    ReconcileError,
    SerializationError,
    StatekitError,
    ValidationError,
)
from statekit.hookspecs import hookimpl, hookspec
from statekit.host import PluginHost
from statekit.store import Retention, StateStore, Watch, open

__all__ = [
    "ANY",
    "JSON",
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
    "Health",
    "HistoryUnavailable",
    "IdempotencyConflict",
    "LockTimeout",
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
