"""statekit-ccxt: any exchange ccxt supports as a statekit exchange connector.

``CcxtConnector("binance", config={"apiKey": ..., "secret": ...})`` places,
cancels and looks up orders through ``ccxt.async_support``, with statekit's
errors, Decimals and UTC times. See the README and docs/connectors/ccxt.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from statekit_ccxt.connector import CcxtConnector

__all__ = ["CcxtConnector"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use: ccxt takes about 2 s to import, and loading the plugin
    # (statekit plugins, a store's validators) must not pay for it.
    if name == "CcxtConnector":
        from statekit_ccxt.connector import CcxtConnector

        return CcxtConnector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
