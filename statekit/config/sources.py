"""The settings sources of one load, in precedence order (highest first).

1. keyword overrides given to :func:`~statekit.config.load_settings` (:class:`OverridesSource`)
2. ``STATEKIT_*`` process environment variables (:mod:`.environment`)
3. each installed dialect's names in the process environment (``TRADING_STATE_*``,
   :mod:`.dialects`)
4. ``STATEKIT_*`` names in the ``.env`` file
5. each installed dialect's names in the ``.env`` file
6. ``config.json`` (:mod:`.json_file`)
7. the defaults of the models (:mod:`.models`)

pydantic-settings' own environment, ``.env`` and secrets-directory sources are not used.
"""

from __future__ import annotations

from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from statekit.config.dialects import installed_dialects
from statekit.config.environment import VariablesSource, statekit_names
from statekit.config.files import (
    CONFIG_FILE_VAR,
    DEFAULT_CONFIG_FILE,
    DEFAULT_ENV_FILE,
    ENV_FILE_VAR,
    pick_file,
    read_dotenv,
)
from statekit.config.json_file import JsonFileSource
from statekit.config.load import Load, Origin, hide_secrets, leaves, secret_paths

__all__ = ["OverridesSource", "settings_sources"]


class OverridesSource(PydanticBaseSettingsSource):
    """The keyword overrides (pydantic-settings' init source), remembered for errors."""

    def __init__(
        self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource, load: Load
    ) -> None:
        super().__init__(settings_cls)
        self._inner = inner
        self._load = load
        self.__name__ = "overrides"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        for path in leaves(data):
            self._load.origins.append(Origin(path, "override ", None, "override"))
        return hide_secrets(data, secret_paths(self.settings_cls))


def settings_sources(
    settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, load: Load
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources of ``load``, highest precedence first (the module docstring's order).

    Picks the ``.env`` and ``config.json`` files now, so a missing named file is an
    error before any value is read.
    """
    env_file = pick_file(
        load.env_file, ENV_FILE_VAR, load.environ, {}, DEFAULT_ENV_FILE, "env_file"
    )
    dotenv = read_dotenv(env_file.path) if env_file else {}
    config_file = pick_file(
        load.config_file, CONFIG_FILE_VAR, load.environ, dotenv, DEFAULT_CONFIG_FILE, "config_file"
    )
    own = statekit_names(settings_cls)
    dialects = installed_dialects()
    environment: list[PydanticBaseSettingsSource] = [
        VariablesSource(settings_cls, load, load.environ, own, "STATEKIT_*")
    ]
    dotenv_sources: list[PydanticBaseSettingsSource] = [
        VariablesSource(settings_cls, load, dotenv, own, "STATEKIT_*", env_file)
    ]
    for dialect in dialects:
        environment.append(
            VariablesSource(settings_cls, load, load.environ, dialect.variables, dialect.label)
        )
        dotenv_sources.append(
            VariablesSource(settings_cls, load, dotenv, dialect.variables, dialect.label, env_file)
        )
    ignored = [path for dialect in dialects for path in dialect.ignored_file_keys]
    return (
        OverridesSource(settings_cls, init_settings, load),
        *environment,
        *dotenv_sources,
        JsonFileSource(settings_cls, load, config_file, ignored),
    )
