"""The plugin host: owns the pluggy PluginManager and builds the registries from the hooks.

Nothing is loaded at import time and there is no global host: create a
:class:`PluginHost` (``statekit.open`` makes one for you) and pass it around.
Plugins are imported when first needed: opening a store imports only the plugin
that serves its URL scheme (found through the ``statekit.backends`` entry-point
group without importing anything); listing plugins, validating a kind or looking
up a connector loads them all.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pluggy

from statekit import hookspecs
from statekit.backend import JSON, Backend
from statekit.errors import PluginError
from statekit.registry import BackendRegistry, SchemeRegistry, ValidatorRegistry

if TYPE_CHECKING:
    from statekit.config import Settings

__all__ = ["KNOWN_SCHEMES", "PluginHost", "PluginInfo"]

log = logging.getLogger("statekit.host")

ENTRY_POINT_GROUP = "statekit"
SCHEME_GROUP = "statekit.backends"
"""URL scheme -> the plugin module serving it; read without importing the plugin."""

KNOWN_SCHEMES: dict[str, str] = {
    "postgresql": "statekit-postgres",
    "postgres": "statekit-postgres",
    "redis": "statekit-redis",
    "rediss": "statekit-redis",
    "mongodb": "statekit-mongodb",
    "mongodb+srv": "statekit-mongodb",
    "influxdb": "statekit-influxdb",
    "file": "statekit-file",
    "mysql": "statekit-mysql",
    "mariadb": "statekit-mysql",
}
"""URL schemes of the project's own plugin distributions, for 'pip install ...' hints."""

_BLOCKED_BY = "STATEKIT_BLOCKED_PLUGINS or PluginHost(blocked=...)"
_LISTED = ("backends", "validators", "caches", "connectors", "reconcilers")


class _Registry(Protocol):
    field: str
    _current: str

    def owned_by(self, plugin: str) -> list[str]: ...

    def _forget(self, plugin: str) -> None: ...


R = TypeVar("R", bound=_Registry)
C = TypeVar("C")


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
    registered: dict[str, list[str]] = field(default_factory=dict)
    """Registry field (``backends``, ``connectors``, ...) -> the names it registered."""
    error: str | None = None
    blocked: bool = False

    @property
    def backends(self) -> list[str]:
        return self.registered.get("backends", [])

    @property
    def validators(self) -> list[str]:
        return self.registered.get("validators", [])

    @property
    def caches(self) -> list[str]:
        return self.registered.get("caches", [])

    @property
    def connectors(self) -> list[str]:
        return self.registered.get("connectors", [])

    @property
    def reconcilers(self) -> list[str]:
        return self.registered.get("reconcilers", [])

    def as_dict(self) -> dict[str, Any]:
        listed = {name: self.registered.get(name, []) for name in _LISTED}
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            **listed,
            **{k: v for k, v in sorted(self.registered.items()) if k not in listed},
            "error": self.error,
            "blocked": self.blocked,
        }


def _builtin_plugins() -> list[tuple[str, ModuleType]]:
    from statekit.backends import memory, sqlite

    return [("memory", memory), ("sqlite", sqlite)]


def _entry_points() -> list[metadata.EntryPoint]:
    """The ``statekit`` group, statekit's own plugins (trading, tiered) first."""
    found = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    return sorted(found, key=lambda ep: ep.dist is None or ep.dist.name != "statekit")


class PluginHost:
    """Loads plugins and calls their hooks.

    :param autoload: load third-party plugins from the ``statekit`` entry-point group.
        Default: on, unless ``STATEKIT_DISABLE_PLUGIN_AUTOLOAD`` is set true.
        statekit's own plugins (``memory``, ``sqlite``, ``trading``, ``tiered``)
        load either way.
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
        self.autoload = autoload
        self._pm = pluggy.PluginManager("statekit")
        self._pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._blocked_seen: dict[str, str] = {}  # blocked plugin name -> its distribution
        self._registries: dict[type[Any], _Registry] = {}
        self._called: dict[type[Any], set[str]] = {}  # registry -> plugins already asked
        self._all_loaded = False

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

    @classmethod
    def from_settings(cls, settings: Settings) -> PluginHost:
        """A host as the settings say (``plugins.disable_autoload``, ``plugins.blocked``)."""
        # None, not True: the host then still honours STATEKIT_DISABLE_PLUGIN_AUTOLOAD itself.
        autoload = False if settings.plugins.disable_autoload else None
        return cls(autoload=autoload, blocked=settings.plugins.blocked)

    @property
    def hook(self) -> Any:
        """pluggy's hook relay, for hooks that are not registrations (``statekit_open_tiered``)."""
        self._load_all()
        return self._pm.hook

    # -- loading -----------------------------------------------------------------------

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

    def _wanted(self, ep: metadata.EntryPoint) -> bool:
        own = ep.dist is not None and ep.dist.name == "statekit"
        return own or self.autoload

    def _load_all(self) -> None:
        """Import every plugin of the ``statekit`` entry-point group not loaded yet."""
        if self._all_loaded:
            return
        self._all_loaded = True
        for ep in _entry_points():
            if self._wanted(ep):
                self._load(ep)

    def _load_serving(self, scheme: str) -> bool:
        """Import only the plugin that declares ``scheme``; False if none declares it."""
        if self._all_loaded:
            return False
        modules = {ep.value for ep in metadata.entry_points(group=SCHEME_GROUP, name=scheme)}
        serving = [ep for ep in _entry_points() if ep.value in modules and self._wanted(ep)]
        for ep in serving:
            self._load(ep)
        return bool(serving)

    def _load(self, ep: metadata.EntryPoint) -> None:
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        known = self._infos.get(ep.name)
        if known is not None and known.distribution == dist:
            return  # loaded already (by its scheme)
        if ep.name in self.blocked:
            self._pm.set_blocked(ep.name)
            self._blocked_seen[ep.name] = dist
            return
        info = PluginInfo(ep.name, dist, version, builtin=dist == "statekit")
        if known is not None:
            # Another plugin already has this name: report it rather than skip it silently.
            info.error = (
                f"not loaded: the plugin name {ep.name!r} is already taken by "
                f"{known.distribution}; rename the entry point or block one of them"
            )
            log.warning("statekit plugin %r (%s) %s", ep.name, dist, info.error)
            self._infos[f"{ep.name} ({dist})"] = info
            return
        try:
            plugin = ep.load()
        except Exception as exc:  # any import failure of a third-party plugin
            info.error = f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
            log.warning("statekit plugin %r (%s) not loaded: %s", ep.name, dist, info.error)
            self._infos[ep.name] = info
            return
        try:
            self._register(ep.name, plugin, info)
        except (ValueError, pluggy.PluginValidationError) as exc:
            # pluggy: already registered under another name, or a hookimpl whose
            # arguments do not match the hookspec. Neither may take the host down.
            info.error = f"failed to register: {exc}"
            log.warning("statekit plugin %r (%s) not loaded: %s", ep.name, dist, info.error)
            self._infos[ep.name] = info

    # -- registries --------------------------------------------------------------------

    def _fill(self, cls: type[R]) -> R:
        """``cls``'s registry with the hook called on every plugin registered so far,
        plugin by plugin, so that a failing plugin is reported by name."""
        registry = self._registries.get(cls)
        if registry is None:
            registry = self._registries[cls] = cls()
        called = self._called.setdefault(cls, set())
        hook_name: str = cls.hook  # type: ignore[attr-defined]
        plugins = self._pm.list_name_plugin()
        # statekit's own plugins first, as they were registered before any other.
        plugins.sort(key=lambda item: not self._builtin(item[0]))
        for name, plugin in plugins:
            if plugin is None or name in called:
                continue
            called.add(name)
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
        return registry  # type: ignore[return-value]

    def _builtin(self, name: str) -> bool:
        info = self._infos.get(name)
        return info is not None and info.builtin

    def registry(self, cls: type[R]) -> R:
        """The registry ``cls`` filled by every plugin (its hook is called once per plugin).

        ``cls`` is :class:`~statekit.registry.BackendRegistry`,
        :class:`~statekit.registry.ValidatorRegistry`, or a registry a layer declares,
        e.g. ``statekit.trading.ConnectorRegistry``.
        """
        self._load_all()
        return self._fill(cls)

    def backends(self) -> BackendRegistry:
        """Every registered backend (``statekit_register_backends``)."""
        return self.registry(BackendRegistry)

    def validators(self) -> ValidatorRegistry:
        """Every registered validator (``statekit_register_validators``)."""
        return self.registry(ValidatorRegistry)

    def lazy_validators(self) -> LazyValidators:
        """Validators that load the plugins at the first value with a kind, not now."""
        return LazyValidators(self)

    def declared_registries(self) -> list[type[Any]]:
        """The registries of the core and those declared by plugins
        (``statekit_declare_registries``), in the order ``statekit plugins`` lists them."""
        self._load_all()
        found: list[type[Any]] = [BackendRegistry, ValidatorRegistry]
        declared: list[type[Any]] = []
        self._pm.hook.statekit_declare_registries(declared=declared)
        found += [cls for cls in dict.fromkeys(declared) if cls not in found]
        order = {name: i for i, name in enumerate(_LISTED)}
        return sorted(found, key=lambda cls: order.get(cls.field, len(order)))

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, with what it registered and any error, by name."""
        registries = [self.registry(cls) for cls in self.declared_registries()]
        infos = []
        for name, info in sorted(self._infos.items()):
            info.registered = {r.field: r.owned_by(name) for r in registries}
            infos.append(info)
        for name, dist in sorted(self._blocked_seen.items()):
            if name not in self._infos:  # blocked: listed so `statekit plugins` shows why
                infos.append(PluginInfo(name, dist, "", builtin=dist == "statekit", blocked=True))
        return infos

    def failures(self) -> list[PluginInfo]:
        """Plugins that failed to load or to register."""
        return [info for info in self.plugins() if info.error]

    def failure_of(self, distribution: str) -> str | None:
        """The error of a plugin of ``distribution`` that failed to load, if any."""
        self._load_all()
        wanted = _normalize_dist(distribution)
        for info in self._infos.values():
            if info.error and _normalize_dist(info.distribution) == wanted:
                return info.error
        return None

    # -- lookups -----------------------------------------------------------------------

    def backend_class(self, scheme: str) -> type[Backend]:
        """The backend for a URL scheme, or a PluginError saying what to install."""
        scheme = scheme.lower()
        cls = self._fill(BackendRegistry).get(scheme)
        if cls is None and self._load_serving(scheme):
            cls = self._fill(BackendRegistry).get(scheme)
        if cls is None:
            cls = self.backends().get(scheme)
        if cls is not None:
            return cls
        installed = ", ".join(self.backends().schemes()) or "none"
        raise PluginError(
            f"no backend for URL scheme {scheme!r} (installed: {installed}){self._hint(scheme)}"
        )

    def _hint(self, scheme: str) -> str:
        package = KNOWN_SCHEMES.get(scheme)
        if scheme in self._blocked_seen:
            return f"; the plugin {scheme!r} is blocked ({_BLOCKED_BY})"
        if not package:
            return ""
        failed = self.failure_of(package)
        wanted = _normalize_dist(package)
        blocked = [n for n, d in self._blocked_seen.items() if _normalize_dist(d) == wanted]
        if failed:
            return f"; {package} is installed but failed: {failed}"
        if blocked:
            return (
                f"; {package} is installed but its plugin {blocked[0]!r} is blocked ({_BLOCKED_BY})"
            )
        return f"; `pip install {package}` adds it"

    def find(self, cls: type[SchemeRegistry[C]], name: str) -> type[C]:
        """The class registered as ``name`` in the registry ``cls``, or a PluginError
        naming the installed ones, the hook that adds one and any failed or blocked plugin."""
        registry = self.registry(cls)
        found = registry.get(name)
        if found is not None:
            return found
        installed = ", ".join(registry.names()) or "none"
        hint = f"; a plugin adds one with the {cls.hook} hook"
        failed = sorted(n for n, i in self._infos.items() if i.error)
        if failed:
            hint += f"; plugins that failed to load: {', '.join(failed)} (see `statekit plugins`)"
        if self._blocked_seen:
            hint += f"; blocked plugins: {', '.join(sorted(self._blocked_seen))} ({_BLOCKED_BY})"
        raise PluginError(f"no {cls.label} named {name!r} (installed: {installed}){hint}")


class LazyValidators:
    """A host's validators, built at the first value that has a kind to check."""

    def __init__(self, host: PluginHost) -> None:
        self._host = host
        self._registry: ValidatorRegistry | None = None

    def validate(self, kind: str, key: str, data: JSON) -> None:
        if self._registry is None:
            self._registry = self._host.validators()
        self._registry.validate(kind, key, data)
