"""Settings dialects: the names another product gave statekit's settings.

statekit's own names are ``STATEKIT_*`` variables and ``config.json`` keys. A
:class:`SettingsDialect` adds another set of variable names for the same settings
(the legacy product's ``TRADING_STATE_*``) and ``config.json`` keys to accept and
ignore. In each variable source (the environment, then the ``.env`` file), a dialect's
names rank just below statekit's own; docs/configuration.md has the whole table.

The core knows no dialect by name. A distribution registers one in the entry-point
group :data:`ENTRY_POINT_GROUP`; statekit's own pyproject registers the legacy one::

    [project.entry-points."statekit.settings_dialects"]
    trading_state = "statekit.compat.settings:TRADING_STATE"

The group is read, and its entries imported, at the first settings load (not at
import time), once per process, in the order of the entry-point names. So
``statekit.config`` never imports ``statekit.compat``: compat depends on config,
never the reverse. The plugin switches (``STATEKIT_DISABLE_PLUGIN_AUTOLOAD``) do not
apply: a dialect changes what settings mean, so it must not come and go with plugins.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata

from statekit.config.load import SettingPath
from statekit.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "SettingsDialect", "installed_dialects"]

ENTRY_POINT_GROUP = "statekit.settings_dialects"
"""Where a distribution registers a :class:`SettingsDialect` instance."""


@dataclass(frozen=True)
class SettingsDialect:
    """Other names for statekit's settings.

    :param label: how the dialect's variables are named in debug output and
        errors, e.g. ``"TRADING_STATE_*"``.
    :param variables: variable name (upper case; matched in any case) -> the setting it
        sets, e.g. ``"TRADING_STATE_API_PORT": ("api", "port")``.
    :param ignored_file_keys: ``config.json`` keys (as setting paths) that have no
        meaning in statekit: accepted, logged at INFO and dropped, where any other
        unknown key is an error.
    """

    label: str
    variables: Mapping[str, SettingPath]
    ignored_file_keys: frozenset[SettingPath] = field(default_factory=frozenset)


@functools.cache
def installed_dialects() -> tuple[SettingsDialect, ...]:
    """Every dialect registered in :data:`ENTRY_POINT_GROUP`, by entry-point name.

    :raises ConfigError: an entry cannot be imported or is not a SettingsDialect
        (nothing is cached then, so the next load tries again).
    """
    found: dict[str, SettingsDialect] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found:
            continue  # the same distribution seen twice on sys.path
        try:
            dialect = entry.load()
        except Exception as exc:  # any import failure: report it as a settings problem
            raise ConfigError(
                f"settings dialect {entry.name!r} ({entry.value}) cannot be loaded: {exc}",
                source=entry.value,
            ) from exc
        if not isinstance(dialect, SettingsDialect):
            raise ConfigError(
                f"settings dialect {entry.name!r} ({entry.value}) is a "
                f"{type(dialect).__name__}, not a SettingsDialect",
                source=entry.value,
            )
        found[entry.name] = dialect
    return tuple(found[name] for name in sorted(found))
