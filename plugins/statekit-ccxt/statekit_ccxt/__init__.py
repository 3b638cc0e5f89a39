"""statekit-ccxt: any exchange ccxt supports as a statekit exchange connector.

``CcxtConnector("binance", config={"apiKey": ..., "secret": ...})`` places,
cancels and looks up orders through ``ccxt.async_support``, with statekit's
errors, Decimals and UTC times. See the README and docs/connectors/ccxt.md.
"""

from statekit_ccxt.connector import CcxtConnector

__all__ = ["CcxtConnector"]
