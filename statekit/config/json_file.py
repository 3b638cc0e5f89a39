"""Settings from ``config.json``: the legacy product's sections and top-level keys.

Every setting may appear in it, under its dotted path (``database.postgres_port`` is
``{"database": {"postgres_port": ...}}``). An unknown key is an error (raised when
the settings are validated), except the keys an installed dialect declares ignored
(:attr:`SettingsDialect.ignored_file_keys`): those are dropped and logged at INFO.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from statekit.config.files import SettingsFile, read_json
from statekit.config.load import (
    Load,
    Origin,
    SettingPath,
    dotted,
    get,
    hide_secrets,
    leaves,
    secret_paths,
)

__all__ = ["JsonFileSource"]

log = logging.getLogger(__name__)


class JsonFileSource(PydanticBaseSettingsSource):
    """Settings from config.json: the legacy product's sections and top-level keys.

    :param file: the file to read; None: no file (the source gives nothing).
    :param ignored: keys accepted and dropped rather than reported as unknown.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        load: Load,
        file: SettingsFile | None,
        ignored: Iterable[SettingPath] = (),
    ) -> None:
        super().__init__(settings_cls)
        self._load = load
        self._file = file
        self._ignored = sorted(set(ignored))
        self.__name__ = f"{file.path if file else 'no config file'}"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads the whole file at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self._file is None:
            return {}
        data = read_json(self._file)
        for path in self._ignored:
            parent = get(data, path[:-1])
            if isinstance(parent, dict) and path[-1] in parent:
                del parent[path[-1]]
                log.info("%s: ignoring legacy setting %s", self._file.path, dotted(path))
        source = os.fspath(self._file.path)
        for path in leaves(data):
            self._load.origins.append(
                Origin(path, f"{self._file.path}: ", None, source, self._file.implicit)
            )
        return hide_secrets(data, secret_paths(self.settings_cls))
