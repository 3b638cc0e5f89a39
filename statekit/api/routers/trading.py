"""The trading views: ``/positions``, ``/orders``, ``/balances`` (read only).

They read the trading layer's sections (:class:`~statekit.trading.state.TradingState`)
from the store; an item that does not parse is listed as ``unreadable`` instead of
failing the whole answer.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import pydantic
from fastapi import APIRouter, Query

from statekit.api.dependencies import StoreDep, TradingDep
from statekit.api.models import BalancesOut, OrdersOut, PositionsOut
from statekit.errors import ValidationError
from statekit.store import StateStore
from statekit.trading import kinds
from statekit.trading.models import OrderStatus
from statekit.trading.state import Section, TradingState

__all__ = ["router"]

M = TypeVar("M", bound=pydantic.BaseModel)

router = APIRouter()


async def _section_items(
    store: StateStore, trading: TradingState, section: Section[M], *kinds_: str
) -> tuple[dict[str, M], list[str]]:
    """The readable items of ``section`` (of ``kinds_``) and the keys that are not."""
    items: dict[str, M] = {}
    unreadable: list[str] = []
    async for record in store.scan(trading.prefix + section.folder):
        if record.kind not in kinds_:
            continue  # a user's own value under the folder, not a trading item
        try:
            items[section.name_of(record.key)] = section.parse(record)
        except (ValidationError, pydantic.ValidationError):
            unreadable.append(record.key)
    return items, unreadable


@router.get(
    "/positions",
    response_model=PositionsOut,
    response_model_exclude_none=True,
    tags=["trading"],
)
async def positions(store: StoreDep, trading: TradingDep) -> PositionsOut:
    """Every position of the trading state, by symbol."""
    items, unreadable = await _section_items(
        store, trading, trading.positions, kinds.POSITION, kinds.LEGACY_POSITION
    )
    return PositionsOut(positions=items, unreadable=unreadable)


@router.get(
    "/orders",
    response_model=OrdersOut,
    response_model_exclude_none=True,
    tags=["trading"],
)
async def orders(
    store: StoreDep,
    trading: TradingDep,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this status.")] = None,
) -> OrdersOut:
    """Every order, by client order id."""
    items, unreadable = await _section_items(store, trading, trading.orders, kinds.ORDER)
    if status is not None:
        items = {k: o for k, o in items.items() if o.status == status}
    return OrdersOut(orders=items, unreadable=unreadable)


@router.get(
    "/balances",
    response_model=BalancesOut,
    response_model_exclude_none=True,
    tags=["trading"],
)
async def balances(store: StoreDep, trading: TradingDep) -> BalancesOut:
    """Every balance, by asset."""
    items, unreadable = await _section_items(store, trading, trading.balances, kinds.BALANCE)
    return BalancesOut(balances=items, unreadable=unreadable)
