"""The legacy drop-in: seed 003's state-manager API, sync, over statekit's async core.

Change one import line and keep running::

    from utils.unified_state_manager import create_backward_compatible_manager   # before
    from statekit.compat import create_backward_compatible_manager               # after

Every name the legacy modules ``utils.unified_state_manager``,
``utils.state_migration``, ``utils.state_database`` and
``utils.enhanced_state_manager`` exported for seed 003's examples is importable
from here. Each manager runs the async core through its own
:class:`~statekit.compat.portal.Portal` (no second implementation, no global
instance). Decisions (store file, file format, failure rules) are in the
docstrings of :mod:`.managers`, :mod:`.legacy_format` and :mod:`.migration`.

The names are imported on first use (PEP 562), so ``statekit.compat.settings`` (the
legacy ``TRADING_STATE_*`` names every settings load reads) costs no trading layer.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from statekit.errors import ValidationError

if TYPE_CHECKING:
    from statekit.compat.legacy_format import Failure, legacy_value
    from statekit.compat.managers import (
        TradingStateManager,
        UnifiedStateManager,
        create_backward_compatible_manager,
        create_enhanced_trading_state_manager,
        get_state_manager,
    )
    from statekit.compat.migration import (
        MigrationReport,
        StateMigrator,
        migrate_legacy_system,
        validate_migration,
    )
    from statekit.compat.portal import Portal
    from statekit.compat.schema import PositionSchema

__all__ = [
    "Failure",
    "MigrationReport",
    "Portal",
    "PositionSchema",
    "StateMigrator",
    "TradingStateManager",
    "UnifiedStateManager",
    "ValidationError",
    "create_backward_compatible_manager",
    "create_enhanced_trading_state_manager",
    "get_state_manager",
    "legacy_value",
    "migrate_legacy_system",
    "validate_migration",
]

_HOMES = {
    "Failure": "legacy_format",
    "legacy_value": "legacy_format",
    "TradingStateManager": "managers",
    "UnifiedStateManager": "managers",
    "create_backward_compatible_manager": "managers",
    "create_enhanced_trading_state_manager": "managers",
    "get_state_manager": "managers",
    "MigrationReport": "migration",
    "StateMigrator": "migration",
    "migrate_legacy_system": "migration",
    "validate_migration": "migration",
    "Portal": "portal",
    "PositionSchema": "schema",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
