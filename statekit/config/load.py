"""One settings load: its inputs, where each value came from, and the error that names it.

pydantic-settings asks each source for its values through a classmethod that takes no
per-call arguments, so :func:`statekit.config.load_settings` hands its inputs to the
sources through :data:`LOAD`, a context variable (thread- and task-local, reset after
the load), rather than class state. Each source records an :class:`Origin` for every
value it gives, so :func:`config_error` can name the variable or file behind a bad one.
Sources also wrap every secret in :class:`~pydantic.SecretStr` before pydantic sees it
(:func:`hide_secrets`).
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, get_args

import pydantic
from pydantic import BaseModel, SecretStr

from statekit.config.files import CONFIG_FILE_VAR, DEFAULT_CONFIG_FILE
from statekit.errors import ConfigError

__all__ = [
    "LOAD",
    "Load",
    "Origin",
    "SettingPath",
    "config_error",
    "dotted",
    "get",
    "hide_secrets",
    "leaves",
    "put",
    "secret_paths",
]

SettingPath = tuple[str, ...]
"""A setting's place: ``("database", "postgres_port")``, ``("log_level",)``."""


@dataclass(frozen=True)
class Origin:
    """Where a value came from, so an error can name the variable or file."""

    path: SettingPath
    prefix: str  # "", "<file>: ", "override "
    variable: str | None  # the variable's name; None: name the setting instead
    source: str  # ConfigError.source
    implicit_file: bool = False  # from ./config.json found by looking, not named by anyone

    def label(self, loc: tuple[int | str, ...]) -> str:
        return f"{self.prefix}{self.variable or dotted(loc)}"


@dataclass
class Load:
    """The inputs of one settings load, shared with its sources."""

    config_file: str | os.PathLike[str] | None = None
    env_file: str | os.PathLike[str] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    origins: list[Origin] = field(default_factory=list)  # highest precedence first

    def origin_of(self, loc: tuple[int | str, ...]) -> Origin | None:
        for origin in self.origins:
            n = min(len(origin.path), len(loc))
            if origin.path[:n] == loc[:n]:
                return origin
        return None


LOAD: ContextVar[Load | None] = ContextVar("statekit_settings_load", default=None)
"""The load in progress in this thread or task; None outside :func:`load_settings`."""


# --- nested dicts addressed by setting paths ----------------------------------------------


def put(data: dict[str, Any], path: SettingPath, value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def get(data: Any, path: SettingPath) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def leaves(data: Mapping[str, Any], path: SettingPath = ()) -> Iterator[SettingPath]:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key)


def dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


# --- secrets ------------------------------------------------------------------------------


@functools.cache
def secret_paths(settings_cls: type[BaseModel]) -> frozenset[SettingPath]:
    """Where the SecretStr settings are (url, database.postgres_password...)."""
    paths: set[SettingPath] = set()

    def walk(model: type[BaseModel], path: SettingPath) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*path, name))
            elif annotation is SecretStr or SecretStr in get_args(annotation):
                paths.add((*path, name))

    walk(settings_cls, ())
    return frozenset(paths)


def hide_secrets(data: Mapping[str, Any], secrets: frozenset[SettingPath]) -> dict[str, Any]:
    """A copy of ``data`` with every secret string already wrapped in SecretStr.

    So a source's output never holds a secret in plain text, not even in
    pydantic-settings' own debug log (PYDANTIC_SETTINGS_DEBUG=1).
    """
    out = dict(data)
    for path in secrets:
        parent: Any = out
        for key in path[:-1]:
            child = parent.get(key) if isinstance(parent, dict) else None
            if not isinstance(child, dict):
                break
            parent[key] = parent = dict(child)  # copy: never mutate the caller's overrides
        else:
            if isinstance(parent.get(path[-1]), str):
                parent[path[-1]] = SecretStr(parent[path[-1]])
    return out


# --- errors -------------------------------------------------------------------------------


def _known_keys(settings_cls: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The setting names allowed where ``loc`` points (for "did you mean")."""
    model = settings_cls
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        annotation = info.annotation if info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def config_error(
    exc: pydantic.ValidationError,
    load: Load,
    settings_cls: type[BaseModel],
) -> ConfigError:
    """One ConfigError naming, for each problem, the variable or file and the setting."""
    lines: list[str] = []
    sources: list[str] = []
    # include_input=False: the input may be a secret. pydantic's msg texts name the
    # expected type or allowed values, never the input.
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = tuple(error["loc"])
        origin = load.origin_of(loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(settings_cls, loc), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            if origin is not None and origin.implicit_file:
                message += (
                    f"; if this {DEFAULT_CONFIG_FILE} is not statekit's, "
                    f"set {CONFIG_FILE_VAR}= (empty) to skip it"
                )
        lines.append(f"{origin.label(loc) if origin else dotted(loc)}: {message}")
        sources.append(origin.source if origin else dotted(loc))
    return ConfigError("; ".join(lines), source=sources[0] if sources else None)
