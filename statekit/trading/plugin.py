"""The built-in ``trading`` plugin: validators for the trading kinds, and the paper exchange.

Registered through ``statekit_register_validators`` like any plugin's, so
another plugin can add rules for the same kinds (a maximum position size) and
``enable_validation = false`` (``TRADING_STATE_ENABLE_VALIDATION``) turns them off.
The ``trading.legacy_*`` kinds (the legacy drop-in's free-form dicts) need an object.
It registers the paper exchange as the connector ``paper``
(``statekit_register_connectors``) and the reconcilers ``orders`` and ``positions``
(``statekit_register_reconcilers``), as a third-party plugin registers its own.
"""

from __future__ import annotations

from typing import Any

from statekit.backend import JSON
from statekit.errors import ValidationError
from statekit.hookspecs import hookimpl
from statekit.registry import SchemeRegistry, ValidatorRegistry
from statekit.trading.exchange import ExchangeConnector
from statekit.trading.reconcile.base import Reconciler

__all__ = ["ConnectorRegistry", "ReconcilerRegistry"]


class ConnectorRegistry(SchemeRegistry[ExchangeConnector]):
    """Passed to ``statekit_register_connectors``: connector name -> ExchangeConnector class
    (``paper``, ``binance``, ...). Look one up with ``host.find(ConnectorRegistry, name)``."""

    hook = "statekit_register_connectors"
    field = "connectors"
    base = ExchangeConnector  # a base, never instantiated
    what = "statekit.trading.exchange.ExchangeConnector"
    noun = "connector name"
    label = "exchange connector"


class ReconcilerRegistry(SchemeRegistry[Reconciler]):
    """Passed to ``statekit_register_reconcilers``: strategy name -> Reconciler class
    (``orders``, ``positions``, ...). Look one up with ``host.find(ReconcilerRegistry, name)``."""

    hook = "statekit_register_reconcilers"
    field = "reconcilers"
    base = Reconciler  # a base, never instantiated
    what = "statekit.trading.reconcile.Reconciler"
    noun = "reconciler name"
    label = "reconciler"


def _an_object(key: str, data: JSON) -> None:
    if not isinstance(data, dict):
        raise ValidationError(
            f"{key!r}: a legacy item must be a JSON object (dict), not {type(data).__name__}",
            key=key,
            reason="not an object",
        )


@hookimpl
def statekit_declare_registries(declared: list[type[Any]]) -> None:
    declared += [ConnectorRegistry, ReconcilerRegistry]


@hookimpl
def statekit_register_validators(registry: ValidatorRegistry) -> None:
    from statekit.trading import kinds
    from statekit.trading.models import Balance, Order, PairState, Portfolio, Position
    from statekit.trading.reconcile.intents import ActualOrder, Intent, IntentStatus
    from statekit.trading.reconcile.metrics import MetricsSnapshot
    from statekit.trading.reconcile.positions import Discrepancy

    registry.add_model(kinds.POSITION, Position)
    registry.add_model(kinds.ORDER, Order)
    registry.add_model(kinds.BALANCE, Balance)
    registry.add_model(kinds.PAIR_STATE, PairState)
    registry.add_model(kinds.PORTFOLIO, Portfolio)
    registry.add_model(kinds.INTENT, Intent)
    registry.add_model(kinds.INTENT_STATUS, IntentStatus)
    registry.add_model(kinds.ACTUAL_ORDER, ActualOrder)
    registry.add_model(kinds.DISCREPANCY, Discrepancy)
    registry.add_model(kinds.RECONCILE_METRICS, MetricsSnapshot)
    for kind in kinds.LEGACY_KINDS:
        registry.add(kind, _an_object)


@hookimpl
def statekit_register_connectors(registry: ConnectorRegistry) -> None:
    from statekit.trading.paper import PaperExchange

    registry.add("paper", PaperExchange)


@hookimpl
def statekit_register_reconcilers(registry: ReconcilerRegistry) -> None:
    from statekit.trading.reconcile.orders import IntentReconciler
    from statekit.trading.reconcile.positions import PositionReconciler

    registry.add("orders", IntentReconciler)
    registry.add("positions", PositionReconciler)
