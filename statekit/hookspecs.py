"""The hooks a statekit plugin can implement.

Hooks are synchronous and do no I/O: they *register* things into a registry
object passed to them; the I/O lives in async methods of what they register.
A plugin is a module (or object) with functions marked ``@statekit.hookimpl``,
found through the ``statekit`` entry-point group::

    [project.entry-points.statekit]
    postgres = "statekit_postgres.plugin"

Call hooks only through :class:`statekit.host.PluginHost`'s typed methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Sequence

    from statekit.backend import Backend
    from statekit.config import Settings
    from statekit.registry import BackendRegistry, SchemeRegistry, ValidatorRegistry

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("statekit")
hookimpl = pluggy.HookimplMarker("statekit")


@hookspec
def statekit_register_backends(registry: BackendRegistry) -> None:
    """Register storage backends, one per URL scheme.

    Called once per :class:`~statekit.host.PluginHost`, the first time a backend
    is looked up (``statekit.open``, ``statekit plugins``, ``doctor``).

    :param registry: call ``registry.add(scheme, BackendClass)`` for each URL
        scheme the plugin serves, e.g. ``registry.add("postgresql", PostgresBackend)``.
        ``BackendClass`` subclasses :class:`statekit.backend.Backend`.
        Registering a scheme another plugin already registered is a
        :class:`~statekit.errors.PluginError` reported against this plugin.
    :return: nothing; the registry is the result.
    """


@hookspec
def statekit_register_validators(registry: ValidatorRegistry) -> None:
    """Register validators that check values of a ``kind`` before they are stored.

    Called once per :class:`~statekit.host.PluginHost`, when a store is opened.
    Validators run in the core before ``append``; a failing one raises
    :class:`~statekit.errors.ValidationError` and nothing is written.

    :param registry: call ``registry.add(kind, fn)`` with ``fn(key, data)`` that
        raises (ValidationError, or ValueError which statekit wraps) on bad data,
        or ``registry.add_model(kind, PydanticModel)`` to validate with a model.
    :return: nothing; the registry is the result.
    """


@hookspec
def statekit_register_caches(registry: SchemeRegistry[Any]) -> None:
    """Register shared caches (the tiered store's second level), one per URL scheme.

    Called once per :class:`~statekit.host.PluginHost`, the first time a shared
    cache is looked up: when a store is opened with ``cache.shared_url`` set, and by
    ``statekit plugins``.

    :param registry: call ``registry.add(scheme, CacheClass)`` for each URL scheme
        the plugin serves, e.g. ``registry.add("redis", RedisCache)``.
        ``CacheClass`` subclasses :class:`statekit.tiered.SharedCache`. Registering a
        scheme another plugin already registered is a
        :class:`~statekit.errors.PluginError` reported against this plugin.
    :return: nothing; the registry is the result.
    """


@hookspec
def statekit_register_connectors(registry: SchemeRegistry[Any]) -> None:
    """Register exchange connectors, one per connector name.

    Called once per :class:`~statekit.host.PluginHost`, the first time a connector
    is looked up (``host.find(ConnectorRegistry, name)``, ``statekit plugins``). The
    built-in ``trading`` plugin registers ``paper``
    (:class:`statekit.trading.paper.PaperExchange`).

    :param registry: call ``registry.add(name, ConnectorClass)`` for each connector
        the plugin provides, e.g. ``registry.add("binance", BinanceConnector)``.
        ``ConnectorClass`` subclasses :class:`statekit.trading.exchange.ExchangeConnector`;
        names are case-insensitive. Registering a name another plugin already
        registered is a :class:`~statekit.errors.PluginError` reported against
        this plugin.
    :return: nothing; the registry is the result.
    """


@hookspec
def statekit_register_reconcilers(registry: SchemeRegistry[Any]) -> None:
    """Register reconciliation strategies, one per name.

    Called once per :class:`~statekit.host.PluginHost`, the first time a reconciler
    is looked up (``ReconcileEngine(reconcilers=["orders", ...])``,
    ``host.find(ReconcilerRegistry, name)``, ``statekit plugins``). The built-in
    ``trading`` plugin registers ``orders``
    (:class:`statekit.trading.reconcile.IntentReconciler`: intents drive orders)
    and ``positions`` (:class:`statekit.trading.reconcile.PositionReconciler`:
    the exchange is the truth for positions).

    :param registry: call ``registry.add(name, ReconcilerClass)`` for each strategy,
        e.g. ``registry.add("hedges", HedgeReconciler)``. ``ReconcilerClass``
        subclasses :class:`statekit.trading.reconcile.Reconciler` and can be built
        with no arguments; names are case-insensitive. Registering a name another
        plugin already registered is a :class:`~statekit.errors.PluginError`
        reported against this plugin.
    :return: nothing; the registry is the result.
    """


@hookspec
def statekit_declare_registries(declared: list[type[Any]]) -> None:
    """Name the registries this plugin's layer adds, so ``statekit plugins`` lists them.

    The built-in ``trading`` plugin declares ``ConnectorRegistry`` and
    ``ReconcilerRegistry``, ``tiered`` declares ``CacheRegistry``. A registry is a
    :class:`statekit.registry.SchemeRegistry` subclass naming its ``hook`` (the
    registration hook that fills it), ``field`` (its column in ``statekit plugins``),
    ``base``, ``what`` and ``label``; look a class up with ``host.find(cls, name)``.

    :param declared: append each registry class, e.g. ``declared.append(CacheRegistry)``.
    :return: nothing; the list is the result.
    """


@hookspec(firstresult=True)
def statekit_open_tiered(
    url: str,
    host: Any,
    settings: Settings,
    cache: object,
    mirrors: Sequence[str] | None,
    fallback: str | None,
) -> Awaitable[Backend] | None:
    """Open ``url`` with read caches, mirrors or a fallback journal in front of it.

    ``host`` is the :class:`~statekit.host.PluginHost` that opens the store.

    Called by :func:`statekit.open` only when a tier is asked for (by its arguments or
    the settings); the built-in ``tiered`` plugin answers (docs/tiered.md).

    :param url: the primary's URL (already checked: its backend is installed).
    :param host: the :class:`~statekit.host.PluginHost` opening the store.
    :param settings: the store's settings (``cache``, ``mirrors``, ``enable_file_fallback``).
    :param cache: ``statekit.open(cache=...)``: None for the settings, a bool, a mapping
        or a ``CacheSettings``.
    :param mirrors: ``statekit.open(mirrors=...)``: None for the settings.
    :param fallback: ``statekit.open(fallback=...)``: None for the settings, ``""`` for off.
    :return: an awaitable of the tiered backend, or None to leave it to another plugin.
    """
