"""The legacy product's settings names: its ``TRADING_STATE_*`` variables and the
``config.json`` keys it had that statekit has no use for.

:data:`TRADING_STATE` is a :class:`~statekit.config.SettingsDialect`, registered in
statekit's pyproject under the ``statekit.settings_dialects`` entry point, which is how
:func:`statekit.config.load_settings` finds it without importing this package.
Its variables rank just below the ``STATEKIT_*`` names of the same source (the
environment, then ``.env``); docs/configuration.md lists them beside the settings
they set.
"""

from collections.abc import Mapping

from statekit.config import SettingsDialect

__all__ = ["LEGACY_ENV_NAMES", "LEGACY_IGNORED_KEYS", "TRADING_STATE"]

LEGACY_ENV_NAMES: Mapping[str, tuple[str, ...]] = {
    "TRADING_STATE_DB_TYPE": ("database", "database_type"),
    "TRADING_STATE_POSTGRES_HOST": ("database", "postgres_host"),
    "TRADING_STATE_POSTGRES_PORT": ("database", "postgres_port"),
    "TRADING_STATE_POSTGRES_DB": ("database", "postgres_db"),
    "TRADING_STATE_POSTGRES_USER": ("database", "postgres_user"),
    "TRADING_STATE_POSTGRES_PASSWORD": ("database", "postgres_password"),
    "TRADING_STATE_INFLUXDB_URL": ("database", "influxdb_url"),
    "TRADING_STATE_INFLUXDB_TOKEN": ("database", "influxdb_token"),
    "TRADING_STATE_INFLUXDB_ORG": ("database", "influxdb_org"),
    "TRADING_STATE_INFLUXDB_BUCKET": ("database", "influxdb_bucket"),
    "TRADING_STATE_API_ENABLED": ("api", "enabled"),
    "TRADING_STATE_API_HOST": ("api", "host"),
    "TRADING_STATE_API_PORT": ("api", "port"),
    "TRADING_STATE_ENABLE_VALIDATION": ("enable_validation",),
    "TRADING_STATE_ENABLE_FILE_FALLBACK": ("enable_file_fallback",),
    "TRADING_STATE_LOG_LEVEL": ("log_level",),
}
"""The legacy product's environment variables and the setting each one sets."""

# Keys the legacy product's config.json could hold that statekit has no use for. They are
# accepted (and logged) so an existing file keeps loading; any other unknown key is an error.
LEGACY_IGNORED_KEYS: frozenset[tuple[str, ...]] = frozenset(
    {
        ("database", "connection_timeout"),
        ("database", "retry_attempts"),
        ("backup_retention_days",),
    }
)
"""``config.json`` keys of the legacy product that statekit accepts and ignores."""

TRADING_STATE = SettingsDialect(
    label="TRADING_STATE_*",
    variables=LEGACY_ENV_NAMES,
    ignored_file_keys=LEGACY_IGNORED_KEYS,
)
"""The legacy dialect, as the ``statekit.settings_dialects`` entry point gives it."""
