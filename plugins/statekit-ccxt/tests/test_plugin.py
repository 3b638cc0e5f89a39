"""The plugin registers the connector; the connector is built, owned and closed as documented."""

from __future__ import annotations

from typing import Any

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import pytest
from statekit_ccxt import CcxtConnector

from statekit.errors import ConfigError
from statekit.host import PluginHost
from statekit.trading.exchange import ExchangeConnector
from statekit.trading.plugin import ConnectorRegistry

QUIET = {"enableRateLimit": False, "timeout_on_exit": 0}


def test_the_plugin_registers_the_connector_ccxt() -> None:
    host = PluginHost()

    assert host.find(ConnectorRegistry, "ccxt") is CcxtConnector
    assert issubclass(CcxtConnector, ExchangeConnector)
    (info,) = [i for i in host.plugins() if i.name == "ccxt"]
    assert info.distribution == "statekit-ccxt" and info.connectors == ["ccxt"]
    assert not info.error


@pytest.mark.asyncio
async def test_it_builds_any_ccxt_exchange_and_closes_what_it_built() -> None:
    connector = CcxtConnector("okx", config={**QUIET, "apiKey": "k", "secret": "s"}, name="desk")

    assert isinstance(connector.exchange, ccxt_async.okx)
    assert (connector.exchange_id, connector.name) == ("okx", "desk")
    assert connector.exchange.apiKey == "k"
    connector.exchange.open()  # as a first request would: an aiohttp session, no socket yet
    assert connector.exchange.session is not None
    await connector.aclose()
    assert connector.exchange.session is None


@pytest.mark.asyncio
async def test_the_default_options_sit_under_the_config() -> None:
    async with CcxtConnector("binance", config=QUIET) as built:
        assert built.exchange.options["fetchOpenOrders"]["warnWithoutSymbol"] is False
    config = {**QUIET, "options": {"fetchOpenOrders": {"warnWithoutSymbol": True}}}
    async with CcxtConnector("binance", config=config) as told:
        assert told.exchange.options["fetchOpenOrders"]["warnWithoutSymbol"] is True


@pytest.mark.asyncio
async def test_an_exchange_passed_in_is_not_closed(binance: Any, venue: Any) -> None:
    async with CcxtConnector(exchange=binance) as connector:
        assert connector.exchange is binance and connector.name == "binance"
    assert binance.session is venue  # still open: its builder closes it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"exchange_id": "nope"}, "no exchange 'nope'"),
        ({"exchange_id": "Exchange"}, "no exchange 'Exchange'"),
    ],
)
def test_an_unknown_exchange_is_a_config_error(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CcxtConnector(**args)


@pytest.mark.asyncio
async def test_config_and_an_exchange_together_is_a_config_error(binance: Any) -> None:
    with pytest.raises(ConfigError, match="not both"):
        CcxtConnector(exchange=binance, config={"apiKey": "k"})
