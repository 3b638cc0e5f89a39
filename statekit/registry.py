"""Registries: what plugins register through the registration hooks.

A registration hook gets one of these and adds to it (``registry.add(...)``); the
:class:`~statekit.host.PluginHost` builds each once, plugin by plugin, so what each
plugin registered (and any failure) is known by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import pydantic

from statekit.backend import JSON, Backend
from statekit.codec import check_kind
from statekit.errors import PluginError, ValidationError

__all__ = ["BackendRegistry", "SchemeRegistry", "Validator", "ValidatorRegistry"]

Validator = Callable[[str, JSON], None]
C = TypeVar("C")


class SchemeRegistry(Generic[C]):
    """URL scheme (or another name) -> a class of ``base``, each name owned by one plugin.

    A layer above the core declares its own registry by subclassing this one with
    ``hook`` (the registration hook that fills it), ``field`` (its name in
    ``statekit plugins``), ``base`` and ``what``, and returning the class from its
    ``statekit_declare_registries`` hook (docs/plugins.md).
    """

    hook: str = ""  # the registration hook that fills it
    field: str = ""  # its name in PluginInfo / `statekit plugins`

    base: type[C]
    what: str  # how a registered class is named in errors
    noun: str = "scheme"  # what the registry's names are, in errors
    label: str = "backend"  # what one registered class is called in lookup errors

    def __init__(self) -> None:
        self._classes: dict[str, type[C]] = {}
        self._owners: dict[str, str] = {}
        self._current: str = "?"

    def add(self, scheme: str, cls: type[C]) -> None:
        """Serve URLs of ``scheme`` with ``cls`` (a subclass of the registry's base)."""
        scheme = scheme.lower()
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {self._current!r} registered {cls!r} for {scheme!r}, "
                f"which is not a {self.what} subclass",
                plugin=self._current,
            )
        if scheme in self._classes:
            raise PluginError(
                f"plugin {self._current!r} registered {self.noun} {scheme!r}, already served by "
                f"plugin {self._owners[scheme]!r}; block one of them",
                plugin=self._current,
            )
        self._classes[scheme] = cls
        self._owners[scheme] = self._current

    def get(self, scheme: str) -> type[C] | None:
        """The class for ``scheme``, or None."""
        return self._classes.get(scheme.lower())

    def schemes(self) -> list[str]:
        """Every registered scheme, sorted."""
        return sorted(self._classes)

    def owned_by(self, plugin: str) -> list[str]:
        return sorted(s for s, owner in self._owners.items() if owner == plugin)

    def _forget(self, plugin: str) -> None:
        """Drop what ``plugin`` registered (its hook failed part way)."""
        for scheme in self.owned_by(plugin):
            del self._classes[scheme], self._owners[scheme]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return self.schemes()


class BackendRegistry(SchemeRegistry[Backend]):
    """Passed to ``statekit_register_backends``: URL scheme -> Backend class."""

    hook = "statekit_register_backends"
    field = "backends"
    base = Backend
    what = "statekit.backend.Backend"


class ValidatorRegistry:
    hook = "statekit_register_validators"
    field = "validators"

    """Passed to ``statekit_register_validators``: kind -> validators."""

    def __init__(self) -> None:
        self._validators: dict[str, list[tuple[str, Validator]]] = {}  # kind -> (plugin, fn)
        self._current: str = "?"

    def add(self, kind: str, validator: Validator) -> None:
        """Run ``validator(key, data)`` before any value of ``kind`` is stored."""
        check_kind(kind)
        if not callable(validator):
            raise PluginError(
                f"plugin {self._current!r} registered {validator!r} for kind {kind!r}, "
                "which is not callable",
                plugin=self._current,
            )
        self._validators.setdefault(kind, []).append((self._current, validator))

    def add_model(self, kind: str, model: type[pydantic.BaseModel]) -> None:
        """Validate values of ``kind`` with a pydantic model."""
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            raise PluginError(
                f"plugin {self._current!r} registered {model!r} for kind {kind!r}, "
                "which is not a pydantic.BaseModel subclass",
                plugin=self._current,
            )

        def validate(key: str, data: JSON) -> None:
            try:
                model.model_validate(data)
            except pydantic.ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or '$'}: {err['msg']}"
                    for err in exc.errors(include_input=False)
                )
                raise ValidationError(
                    f"{kind} {key!r} is invalid: {problems}", key=key, reason=problems
                ) from exc

        self.add(kind, validate)

    def validate(self, kind: str, key: str, data: JSON) -> None:
        """Run every validator of ``kind``; raise ValidationError on the first failure."""
        for _, validator in self._validators.get(kind, ()):
            try:
                validator(key, data)
            except ValidationError:
                raise
            except (ValueError, TypeError) as exc:
                raise ValidationError(f"{kind} {key!r} is invalid: {exc}", key=key) from exc

    def kinds(self) -> list[str]:
        return sorted(self._validators)

    def owned_by(self, plugin: str) -> list[str]:
        return sorted(
            k for k, entries in self._validators.items() if any(p == plugin for p, _ in entries)
        )

    def _forget(self, plugin: str) -> None:
        """Drop what ``plugin`` registered (its hook failed part way)."""
        for kind, entries in list(self._validators.items()):
            kept = [(p, fn) for p, fn in entries if p != plugin]
            if kept:
                self._validators[kind] = kept
            else:
                del self._validators[kind]
