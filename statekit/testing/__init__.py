"""Test support shipped in the wheel: the backend conformance suite and server helpers.

Install with ``pip install statekit[testing]``. See docs/writing-a-backend.md; the
worked example is :mod:`statekit.testing.example`.

statekit's ``pytest11`` plugin (:mod:`statekit.testing.plugin`) imports this package in
every pytest run of a project that has statekit installed, so importing it costs nothing
optional: the names below load their module (and pytest-asyncio, for the contracts) on
first use.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from statekit.testing.contract import BackendContract
    from statekit.testing.history import TimeOrderContract, assert_true_history
    from statekit.testing.inputs import BadInputContract
    from statekit.testing.outage import OutageContract
    from statekit.testing.servers import (
        ScriptServerControl,
        fresh_namespace,
        in_ci,
        open_or_skip,
        require_server,
        server_control,
        server_url,
        start_hint,
    )

__all__ = [
    "BackendContract",
    "BadInputContract",
    "OutageContract",
    "ScriptServerControl",
    "TimeOrderContract",
    "assert_true_history",
    "fresh_namespace",
    "in_ci",
    "open_or_skip",
    "require_server",
    "server_control",
    "server_url",
    "start_hint",
]

_HOMES = {
    "BackendContract": "contract",
    "BadInputContract": "inputs",
    "OutageContract": "outage",
    "TimeOrderContract": "history",
    "assert_true_history": "history",
    "ScriptServerControl": "servers",
    "fresh_namespace": "servers",
    "in_ci": "servers",
    "open_or_skip": "servers",
    "require_server": "servers",
    "server_control": "servers",
    "server_url": "servers",
    "start_hint": "servers",
}
"""Where each exported name lives: ``statekit.testing.<module>``."""

# A failing contract test must show the values it compared, not a bare AssertionError:
# pytest rewrites the asserts of the suite's modules, which it can do only if it is told
# before they are imported (they are imported lazily, below, so this is in time).
pytest.register_assert_rewrite(
    *(f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__))
)


def __getattr__(name: str) -> Any:
    """Import the module of an exported name on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{home}")
    except ModuleNotFoundError as exc:
        if exc.name != "pytest_asyncio":
            raise
        raise ModuleNotFoundError(
            f"{__name__}.{name} runs async tests and needs pytest-asyncio: "
            'pip install "statekit[testing]"',
            name=exc.name,
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value
