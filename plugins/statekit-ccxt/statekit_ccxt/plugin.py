"""The statekit plugin: :class:`~statekit_ccxt.CcxtConnector` as the connector ``ccxt``."""

from __future__ import annotations

from statekit.hookspecs import hookimpl
from statekit.host import ConnectorRegistry
from statekit_ccxt.connector import CcxtConnector

__all__ = ["statekit_register_connectors"]


@hookimpl
def statekit_register_connectors(registry: ConnectorRegistry) -> None:
    """``host.connector_class("ccxt")`` is :class:`CcxtConnector` (any exchange ccxt supports)."""
    registry.add("ccxt", CcxtConnector)
