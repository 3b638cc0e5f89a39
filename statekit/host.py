"""The plugin host: owns the pluggy PluginManager and exposes one typed method per hook.

Nothing is loaded at import time and there is no global host: create a
:class:`PluginHost` (``statekit.open`` makes one for you) and pass it around.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy
import pydantic

from statekit import hookspecs
from statekit.backend import JSON, Backend
from statekit.codec import check_kind
from statekit.errors import ConfigError, PluginError, ValidationError
from statekit.tiered.shared import SharedCache

if TYPE_CHECKING:
    from statekit.config import Settings
    from statekit.trading.exchange import ExchangeConnector
    from statekit.trading.reconcile.base import Reconciler

__all__ = [
    "KNOWN_SCHEMES",
    "BackendRegistry",
    "CacheRegistry",
    "ConnectorRegistry",
    "PluginHost",
    "PluginInfo",
    "ReconcilerRegistry",
    "ValidatorRegistry",
]

log = logging.getLogger("statekit.host")

ENTRY_POINT_GROUP = "statekit"

KNOWN_SCHEMES: dict[str, str] = {
    "postgresql": "statekit-postgres",
    "postgres": "statekit-postgres",
    "redis": "statekit-redis",
    "rediss": "statekit-redis",
    "mongodb": "statekit-mongodb",
    "mongodb+srv": "statekit-mongodb",
    "influxdb": "statekit-influxdb",
    "file": "statekit-file",
}
"""URL schemes of the project's own plugin distributions, for 'pip install ...' hints."""

Validator = Callable[[str, JSON], None]
C = TypeVar("C")

_BLOCKED_BY = "STATEKIT_BLOCKED_PLUGINS or PluginHost(blocked=...)"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _normalize_dist(name: str) -> str:
    # PEP 503: METADATA may spell it statekit_postgres or Statekit-Postgres.
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class PluginInfo:
    """What ``statekit plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    builtin: bool
    backends: list[str] = field(default_factory=list)
    validators: list[str] = field(default_factory=list)
    caches: list[str] = field(default_factory=list)
    connectors: list[str] = field(default_factory=list)
    reconcilers: list[str] = field(default_factory=list)
    error: str | None = None
    blocked: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "backends": self.backends,
            "validators": self.validators,
            "caches": self.caches,
            "connectors": self.connectors,
            "reconcilers": self.reconcilers,
            "error": self.error,
            "blocked": self.blocked,
        }


class _SchemeRegistry(Generic[C]):
    """URL scheme (or another name) -> a class of ``base``, each name owned by one plugin."""

    base: type[C]
    what: str  # how a registered class is named in errors
    noun: str = "scheme"  # what the registry's names are, in errors

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


class BackendRegistry(_SchemeRegistry[Backend]):
    """Passed to ``statekit_register_backends``: URL scheme -> Backend class."""

    base = Backend
    what = "statekit.backend.Backend"


class CacheRegistry(_SchemeRegistry[SharedCache]):
    """Passed to ``statekit_register_caches``: URL scheme -> SharedCache class
    (the tiered store's shared second level, ``cache.shared_url``)."""

    base = SharedCache
    what = "statekit.tiered.SharedCache"


class ConnectorRegistry(_SchemeRegistry["ExchangeConnector"]):
    """Passed to ``statekit_register_connectors``: connector name -> ExchangeConnector class
    (``paper``, ``binance``, ...)."""

    what = "statekit.trading.exchange.ExchangeConnector"
    noun = "connector name"

    def __init__(self) -> None:
        super().__init__()
        # Imported here: statekit.trading imports the store, which imports this module.
        from statekit.trading.exchange import ExchangeConnector

        self.base = ExchangeConnector  # type: ignore[type-abstract]  # a base, never instantiated

    def names(self) -> list[str]:
        """Every registered connector name, sorted."""
        return self.schemes()


class ReconcilerRegistry(_SchemeRegistry["Reconciler"]):
    """Passed to ``statekit_register_reconcilers``: strategy name -> Reconciler class
    (``orders``, ``positions``, ...)."""

    what = "statekit.trading.reconcile.Reconciler"
    noun = "reconciler name"

    def __init__(self) -> None:
        super().__init__()
        # Imported here: statekit.trading imports the store, which imports this module.
        from statekit.trading.reconcile.base import Reconciler

        self.base = Reconciler  # type: ignore[type-abstract]  # a base, never instantiated

    def names(self) -> list[str]:
        """Every registered reconciler name, sorted."""
        return self.schemes()


class ValidatorRegistry:
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


def _builtin_plugins() -> list[tuple[str, ModuleType]]:
    from statekit.backends import memory, sqlite
    from statekit.trading import plugin as trading

    return [("memory", memory), ("sqlite", sqlite), ("trading", trading)]


class PluginHost:
    """Loads plugins and calls their hooks.

    :param autoload: load plugins from the ``statekit`` entry-point group.
        Default: on, unless ``STATEKIT_DISABLE_PLUGIN_AUTOLOAD`` is set true.
    :param blocked: plugin names never to load (built-ins included), added to
        those in ``STATEKIT_BLOCKED_PLUGINS`` (comma separated).
    :param plugins: extra plugin objects to register (name, module or object),
        e.g. a test's own plugin.
    """

    def __init__(
        self,
        *,
        autoload: bool | None = None,
        blocked: Iterable[str] = (),
        plugins: Iterable[tuple[str, object]] = (),
    ) -> None:
        if autoload is None:
            autoload = not _truthy(os.environ.get("STATEKIT_DISABLE_PLUGIN_AUTOLOAD"))
        env_blocked = os.environ.get("STATEKIT_BLOCKED_PLUGINS", "")
        self.blocked = frozenset(
            {b.strip() for b in env_blocked.split(",") if b.strip()} | set(blocked)
        )
        self._pm = pluggy.PluginManager("statekit")
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._blocked_seen: dict[str, str] = {}  # blocked plugin name -> its distribution
        self._backends: BackendRegistry | None = None
        self._validators: ValidatorRegistry | None = None
        self._caches: CacheRegistry | None = None
        self._connectors: ConnectorRegistry | None = None
        self._reconcilers: ReconcilerRegistry | None = None

        version = metadata.version("statekit")
        for name, module in _builtin_plugins():
            self._register(name, module, PluginInfo(name, "statekit", version, builtin=True))
        for name, plugin in plugins:
            info = PluginInfo(name, "(in process)", "", builtin=False)
            try:
                self._register(name, plugin, info)
            except (ValueError, pluggy.PluginValidationError) as exc:
                # The caller's own plugin: fail loudly, but as a statekit error.
                raise PluginError(
                    f"plugin {name!r} cannot be registered: {exc}", plugin=name
                ) from exc
        if autoload:
            self._load_entry_points()

    @classmethod
    def from_settings(cls, settings: Settings) -> PluginHost:
        """A host as the settings say (``plugins.disable_autoload``, ``plugins.blocked``)."""
        # None, not True: the host then still honours STATEKIT_DISABLE_PLUGIN_AUTOLOAD itself.
        autoload = False if settings.plugins.disable_autoload else None
        return cls(autoload=autoload, blocked=settings.plugins.blocked)

    def _register(self, name: str, plugin: object, info: PluginInfo) -> None:
        if name in self.blocked:
            self._pm.set_blocked(name)
            self._blocked_seen[name] = info.distribution
            return
        self._pm.register(plugin, name=name)
        unknown = sorted(c.name for c in self._pm.get_hookcallers(plugin) or () if c.spec is None)
        if unknown:  # a misspelt hook would otherwise be silently never called
            self._pm.unregister(plugin)
            known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("statekit_")))
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {', '.join(unknown)} (statekit's hooks: {known})"
            )
        self._infos[name] = info

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            if ep.name in self.blocked:
                self._pm.set_blocked(ep.name)
                self._blocked_seen[ep.name] = dist
                continue
            if ep.name in self._infos:
                # Another plugin already has this name: report it rather than skip it silently.
                first = self._infos[ep.name].distribution
                info = PluginInfo(ep.name, dist, version, builtin=False)
                info.error = (
                    f"not loaded: the plugin name {ep.name!r} is already taken by {first}; "
                    "rename the entry point or block one of them"
                )
                log.warning("statekit plugin %r (%s) %s", ep.name, dist, info.error)
                self._infos[f"{ep.name} ({dist})"] = info
                continue
            info = PluginInfo(ep.name, dist, version, builtin=False)
            try:
                plugin = ep.load()
            except Exception as exc:  # any import failure of a third-party plugin
                info.error = f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
                log.warning("statekit plugin %r (%s) not loaded: %s", ep.name, dist, info.error)
                self._infos[ep.name] = info
                continue
            try:
                self._register(ep.name, plugin, info)
            except (ValueError, pluggy.PluginValidationError) as exc:
                # pluggy: already registered under another name, or a hookimpl whose
                # arguments do not match the hookspec. Neither may take the host down.
                info.error = f"failed to register: {exc}"
                log.warning("statekit plugin %r (%s) not loaded: %s", ep.name, dist, info.error)
                self._infos[ep.name] = info

    def _call_each(
        self,
        hook_name: str,
        registry: BackendRegistry
        | CacheRegistry
        | ConnectorRegistry
        | ReconcilerRegistry
        | ValidatorRegistry,
    ) -> None:
        """Call one registration hook plugin by plugin, so that a failing plugin
        is reported by name and what each plugin registered is known."""
        plugins = self._pm.list_name_plugin()
        for name, plugin in plugins:
            if plugin is None:
                continue
            others = [p for n, p in plugins if n != name and p is not None]
            caller = self._pm.subset_hook_caller(hook_name, remove_plugins=others)
            registry._current = name
            try:
                caller(registry=registry)
            except Exception as exc:  # a plugin's hook failing must not take the host down
                message = (
                    str(exc)
                    if isinstance(exc, PluginError)
                    else f"{hook_name} failed: {type(exc).__name__}: {exc}"
                )
                log.warning("statekit plugin %r: %s", name, message)
                registry._forget(name)  # a failed plugin registers nothing, not half
                info = self._infos[name]
                # Keep an earlier hook's failure visible too.
                info.error = f"{info.error}; {message}" if info.error else message
            finally:
                registry._current = "?"

    def backends(self) -> BackendRegistry:
        """Every registered backend (``statekit_register_backends``, called once)."""
        if self._backends is None:
            registry = BackendRegistry()
            self._call_each("statekit_register_backends", registry)
            self._backends = registry
        return self._backends

    def validators(self) -> ValidatorRegistry:
        """Every registered validator (``statekit_register_validators``, called once)."""
        if self._validators is None:
            registry = ValidatorRegistry()
            self._call_each("statekit_register_validators", registry)
            self._validators = registry
        return self._validators

    def caches(self) -> CacheRegistry:
        """Every registered shared cache (``statekit_register_caches``, called once)."""
        if self._caches is None:
            registry = CacheRegistry()
            self._call_each("statekit_register_caches", registry)
            self._caches = registry
        return self._caches

    def connectors(self) -> ConnectorRegistry:
        """Every registered exchange connector (``statekit_register_connectors``, called once)."""
        if self._connectors is None:
            registry = ConnectorRegistry()
            self._call_each("statekit_register_connectors", registry)
            self._connectors = registry
        return self._connectors

    def reconcilers(self) -> ReconcilerRegistry:
        """Every registered reconciler (``statekit_register_reconcilers``, called once)."""
        if self._reconcilers is None:
            registry = ReconcilerRegistry()
            self._call_each("statekit_register_reconcilers", registry)
            self._reconcilers = registry
        return self._reconcilers

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, with what it registered and any error, by name."""
        backends, validators, caches = self.backends(), self.validators(), self.caches()
        connectors, reconcilers = self.connectors(), self.reconcilers()
        infos = []
        for name, info in sorted(self._infos.items()):
            info.backends = backends.owned_by(name)
            info.validators = validators.owned_by(name)
            info.caches = caches.owned_by(name)
            info.connectors = connectors.owned_by(name)
            info.reconcilers = reconcilers.owned_by(name)
            infos.append(info)
        for name, dist in sorted(self._blocked_seen.items()):
            if name not in self._infos:  # blocked: listed so `statekit plugins` shows why
                infos.append(PluginInfo(name, dist, "", builtin=dist == "statekit", blocked=True))
        return infos

    def failures(self) -> list[PluginInfo]:
        """Plugins that failed to load or to register."""
        return [info for info in self.plugins() if info.error]

    def backend_class(self, scheme: str) -> type[Backend]:
        """The backend for a URL scheme, or a PluginError saying what to install."""
        cls = self.backends().get(scheme)
        if cls is not None:
            return cls
        installed = ", ".join(self.backends().schemes()) or "none"
        hint = ""
        package = KNOWN_SCHEMES.get(scheme.lower())
        if scheme.lower() in self._blocked_seen:
            hint = f"; the plugin {scheme.lower()!r} is blocked ({_BLOCKED_BY})"
        elif package:
            hint = f"; `pip install {package}` adds it"
            wanted = _normalize_dist(package)
            failed = [
                i
                for i in self._infos.values()
                if i.error and _normalize_dist(i.distribution) == wanted
            ]
            blocked = [n for n, d in self._blocked_seen.items() if _normalize_dist(d) == wanted]
            if failed:
                hint = f"; {package} is installed but failed: {failed[0].error}"
            elif blocked:
                hint = (
                    f"; {package} is installed but its plugin {blocked[0]!r} is blocked "
                    f"({_BLOCKED_BY})"
                )
        raise PluginError(f"no backend for URL scheme {scheme!r} (installed: {installed}){hint}")

    def cache_class(self, scheme: str) -> type[SharedCache]:
        """The shared cache for a URL scheme (``cache.shared_url``), or a ConfigError
        naming the scheme, the installed ones and what to install."""
        cls = self.caches().get(scheme)
        if cls is not None:
            return cls
        installed = ", ".join(self.caches().schemes()) or "none"
        package = KNOWN_SCHEMES.get(scheme.lower())
        hint = f"; `pip install {package}` adds it" if package else ""
        failed = [
            i
            for i in self._infos.values()
            if i.error and package and _normalize_dist(i.distribution) == _normalize_dist(package)
        ]
        if failed:
            hint = f"; {package} is installed but failed: {failed[0].error}"
        raise ConfigError(
            f"cache.shared_url: no shared cache for URL scheme {scheme!r} "
            f"(installed: {installed}){hint}",
            source="cache.shared_url",
        )

    def connector_class(self, name: str) -> type[ExchangeConnector]:
        """The exchange connector registered as ``name``, or a PluginError naming the
        installed ones (and any plugin that failed or is blocked)."""
        connectors = self.connectors()
        cls = connectors.get(name)
        if cls is not None:
            return cls
        installed = ", ".join(connectors.names()) or "none"
        hint = "; a plugin adds one with the statekit_register_connectors hook"
        failed = sorted(n for n, i in self._infos.items() if i.error)
        if failed:
            hint += f"; plugins that failed to load: {', '.join(failed)} (see `statekit plugins`)"
        if self._blocked_seen:
            hint += f"; blocked plugins: {', '.join(sorted(self._blocked_seen))} ({_BLOCKED_BY})"
        raise PluginError(f"no exchange connector named {name!r} (installed: {installed}){hint}")

    def reconciler_class(self, name: str) -> type[Reconciler]:
        """The reconciler registered as ``name``, or a PluginError naming the installed ones."""
        registry = self.reconcilers()
        cls = registry.get(name)
        if cls is not None:
            return cls
        installed = ", ".join(registry.names()) or "none"
        hint = "; a plugin adds one with the statekit_register_reconcilers hook"
        failed = sorted(n for n, i in self._infos.items() if i.error)
        if failed:
            hint += f"; plugins that failed to load: {', '.join(failed)} (see `statekit plugins`)"
        raise PluginError(f"no reconciler named {name!r} (installed: {installed}){hint}")
