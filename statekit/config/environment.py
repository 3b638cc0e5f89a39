"""Settings from ``NAME=value`` variables: the process environment and the ``.env`` file.

Both are read by :class:`VariablesSource`, once per naming scheme: statekit's own
``STATEKIT_<FIELD>`` / ``STATEKIT_<SECTION>__<FIELD>`` names (:func:`statekit_names`)
and each installed dialect's names (:mod:`statekit.config.dialects`). Names match
case-insensitively; an empty value counts as unset; a list setting takes a JSON
array or a comma-separated string. Unknown names are ignored: the environment is
shared with plugins and other programs.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_origin

from pydantic import BaseModel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from statekit.config.files import SettingsFile
from statekit.config.load import Load, Origin, SettingPath, dotted, hide_secrets, put, secret_paths
from statekit.errors import ConfigError

__all__ = ["ENV_PREFIX", "VariablesSource", "statekit_names"]

ENV_PREFIX = "STATEKIT_"

# Short names kept identical to the ones statekit/host.py reads from the environment.
_STATEKIT_ALIASES: Mapping[str, SettingPath] = {
    "STATEKIT_DISABLE_PLUGIN_AUTOLOAD": ("plugins", "disable_autoload"),
    "STATEKIT_BLOCKED_PLUGINS": ("plugins", "blocked"),
}


@dataclass(frozen=True)
class _Target:
    path: SettingPath
    is_list: bool


@functools.cache
def statekit_names(settings_cls: type[BaseSettings]) -> Mapping[str, _Target]:
    """STATEKIT_<FIELD> and STATEKIT_<SECTION>__<FIELD> for every setting, plus aliases."""
    names: dict[str, _Target] = {}

    def walk(model: type[BaseModel], path: SettingPath) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*path, name))
                continue
            full = (*path, name)
            names[ENV_PREFIX + "__".join(full).upper()] = _Target(
                full, get_origin(annotation) is list
            )

    walk(settings_cls, ())
    for alias, path in _STATEKIT_ALIASES.items():
        names[alias] = names[ENV_PREFIX + "__".join(path).upper()]
    return names


class VariablesSource(PydanticBaseSettingsSource):
    """Settings from NAME=value variables: the process environment or a .env file.

    :param variables: the environment, or the ``.env`` file's variables.
    :param names: variable name (upper case) -> the setting it sets.
    :param kind: the naming scheme, for debug output (``"STATEKIT_*"``).
    :param file: the ``.env`` file the variables come from; None: the environment.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        load: Load,
        variables: Mapping[str, str | None],
        names: Mapping[str, _Target | SettingPath],
        kind: str,
        file: SettingsFile | None = None,
    ) -> None:
        super().__init__(settings_cls)
        self._load = load
        self._variables = variables
        self._names = {
            name: t if isinstance(t, _Target) else _Target(t, is_list=False)
            for name, t in names.items()
        }
        self._file = file
        # pydantic-settings keys its per-source debug output by __name__.
        self.__name__ = f"{file.path if file else 'environment'} {kind}"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every variable at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = f"{self._file.path}: " if self._file else ""
        found: dict[SettingPath, tuple[str, str, _Target]] = {}
        for name, raw in self._variables.items():
            target = self._names.get(name.upper())
            if target is None or raw is None or raw == "":
                continue
            earlier = found.get(target.path)
            if earlier is not None and earlier[1] != raw:
                raise ConfigError(
                    f"{prefix}{earlier[0]} and {name} both set {dotted(target.path)} "
                    "to different values; set only one",
                    source=os.fspath(self._file.path) if self._file else name,
                )
            found[target.path] = (name, raw, target)
        data: dict[str, Any] = {}
        for path, (name, raw, target) in sorted(found.items()):
            source = os.fspath(self._file.path) if self._file else name
            value: Any = _split_list(raw, f"{prefix}{name}", source) if target.is_list else raw
            put(data, path, value)
            self._load.origins.append(Origin(path, prefix, name, source))
        return hide_secrets(data, secret_paths(self.settings_cls))


def _split_list(raw: str, label: str, source: str) -> list[Any]:
    if raw.lstrip().startswith("["):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{label}: not a JSON array (column {exc.colno}: {exc.msg})", source=source
            ) from None
        except RecursionError:
            raise ConfigError(f"{label}: nested too deeply to read", source=source) from None
        return list(value)  # a valid JSON text starting with "[" is an array
    return [part.strip() for part in raw.split(",") if part.strip()]
