"""statekit's settings: where they come from, what they mean, and the store URL they give.

Sources, highest precedence first (docs/configuration.md has the full table):

1. keyword overrides given to :func:`load_settings`
2. ``STATEKIT_*`` process environment variables
3. legacy ``TRADING_STATE_*`` process environment variables
4. the ``.env`` file (its ``STATEKIT_*`` names over its ``TRADING_STATE_*`` names)
5. ``config.json`` (the legacy product's format)
6. defaults

One module per concern: :mod:`.models` (the settings, their defaults, the store URL,
:func:`load_settings`), :mod:`.sources` (the order above), :mod:`.environment` (the
environment and ``.env`` variables), :mod:`.json_file` (``config.json``), :mod:`.files`
(which files, and reading them), :mod:`.load` (one load's inputs, origins and errors).
The legacy ``TRADING_STATE_*`` names live in :mod:`statekit.compat.settings`, found
through the ``statekit.settings_dialects`` entry point (:mod:`.dialects`): this package
never imports :mod:`statekit.compat`.

Every problem is a :class:`statekit.errors.ConfigError` with one line naming the file
or variable and the setting. Secrets are :class:`pydantic.SecretStr`: they never appear
in ``repr()``, in errors, or in :meth:`Settings.masked`.
"""

from statekit.config.dialects import SettingsDialect
from statekit.config.models import (
    DATABASE_TYPES,
    DEFAULT_MAX_VALUE_BYTES,
    LOG_LEVELS,
    ApiSettings,
    CacheSettings,
    DatabaseSettings,
    PluginSettings,
    Settings,
    load_settings,
)

__all__ = [
    "DATABASE_TYPES",
    "DEFAULT_MAX_VALUE_BYTES",
    "LOG_LEVELS",
    "ApiSettings",
    "CacheSettings",
    "DatabaseSettings",
    "PluginSettings",
    "Settings",
    "SettingsDialect",
    "load_settings",
]
