"""The two files settings come from: which ``.env`` and ``config.json`` to read, and reading them.

A file is named by an argument of :func:`statekit.config.load_settings`, else by a
variable (``STATEKIT_ENV_FILE``, ``STATEKIT_CONFIG_FILE``; the config file's may also be
in the ``.env`` file), else it is the default in the working directory when one exists.
A named file must exist; named as ``""``, no file is read. Every problem is a
:class:`~statekit.errors.ConfigError` naming the file, and never quotes its content.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from statekit.errors import ConfigError

__all__ = [
    "CONFIG_FILE_VAR",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_ENV_FILE",
    "ENV_FILE_VAR",
    "SettingsFile",
    "pick_file",
    "read_dotenv",
    "read_json",
]

CONFIG_FILE_VAR = "STATEKIT_CONFIG_FILE"
ENV_FILE_VAR = "STATEKIT_ENV_FILE"
DEFAULT_CONFIG_FILE = "config.json"
DEFAULT_ENV_FILE = ".env"


@dataclass(frozen=True)
class SettingsFile:
    """A file to read settings from."""

    path: Path
    implicit: bool  # found by looking in the working directory, not named by anyone


def pick_file(
    explicit: str | os.PathLike[str] | None,
    variable: str,
    environ: Mapping[str, str],
    dotenv: Mapping[str, str | None],
    default: str,
    argument: str,
) -> SettingsFile | None:
    """The file to read, or None.

    :param explicit: the ``load_settings`` argument (None: not given).
    :param variable: the variable that may name it, looked up in ``environ``, then ``dotenv``.
    :param default: the file read when it exists and nothing names another.
    :param argument: the argument's name, for the error.
    """
    named: tuple[str, str] | None = None  # (path, who named it)
    if explicit is not None:
        named = (os.fspath(explicit), f"the {argument} argument")
    else:
        for where, variables in (("", environ), (" in .env", dotenv)):
            value = _lookup(variables, variable)
            if value is not None:
                named = (value, f"{variable}{where}")
                break
    if named is None:
        path = Path(default)
        return SettingsFile(path, implicit=True) if path.is_file() else None
    if named[0] == "":
        return None  # named as empty: read no file at all
    path = Path(named[0]).expanduser()
    if not path.is_file():
        problem = "not a file" if path.exists() else "no such file"
        raise ConfigError(f"{path}: {problem} (named by {named[1]})", source=os.fspath(path))
    return SettingsFile(path, implicit=False)


def _lookup(variables: Mapping[str, str | None], name: str) -> str | None:
    for key, value in variables.items():
        if key.upper() == name and value is not None:
            return value
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start})", source=os.fspath(path)
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read: {exc.strerror or exc}", source=os.fspath(path)
        ) from None


def read_dotenv(path: Path) -> dict[str, str | None]:
    """The ``NAME=value`` lines of a ``.env`` file, ``${VAR}`` expanded; any other line
    is an error."""
    text = _read_text(path)
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(
                f"{path} line {binding.original.line}: not a NAME=value line",
                source=os.fspath(path),
            )
    return dotenv_values(stream=io.StringIO(text), interpolate=True)


def read_json(file: SettingsFile) -> dict[str, Any]:
    """The JSON object in ``file``."""
    text = _read_text(file.path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg only: exc.doc is the whole file, secrets included.
        raise ConfigError(
            f"{file.path} line {exc.lineno} column {exc.colno}: {exc.msg}",
            source=os.fspath(file.path),
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{file.path}: arrays or objects are nested too deeply to read",
            source=os.fspath(file.path),
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file.path}: the top level must be a JSON object {{...}}, not {type(data).__name__}",
            source=os.fspath(file.path),
        )
    return data
