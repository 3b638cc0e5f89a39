"""The statekit plugin: :class:`~statekit_ccxt.CcxtConnector` as the connector ``ccxt``."""

from __future__ import annotations

from typing import Any

from statekit.hookspecs import hookimpl
from statekit.registry import SchemeRegistry

__all__ = ["statekit_register_connectors"]


@hookimpl
def statekit_register_connectors(registry: SchemeRegistry[Any]) -> None:
    """The connector ``ccxt`` is :class:`CcxtConnector` (any exchange ccxt supports)."""
    from statekit_ccxt.connector import CcxtConnector

    registry.add("ccxt", CcxtConnector)
