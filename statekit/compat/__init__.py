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
"""

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
from statekit.errors import ValidationError

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
