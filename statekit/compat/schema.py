"""``PositionSchema``: seed 003's validation example, raising statekit's ValidationError."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Self

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from statekit.errors import ValidationError
from statekit.trading.models import Direction, Money, Position

__all__ = ["PositionSchema"]


def _local_to_utc(value: datetime) -> datetime:
    # A naive time (``datetime.now()``) is the machine's local time, as legacy code meant it.
    return value.astimezone(UTC)


LocalTime = Annotated[datetime, AfterValidator(_local_to_utc)]


class PositionSchema(BaseModel):
    """A pair position, checked: seed 003's ``PositionSchema(...)``.

    ``PositionSchema(symbol1="EUR", symbol2="USD", direction="long",
    entry_time=datetime.now(), quantity=100000, entry_price=1.0985)``.

    - ``direction``: ``long``, ``short`` or ``flat``;
    - ``quantity`` and ``entry_price``: finite and more than 0, kept as ``Decimal``
      (a float through its shortest text: ``1.0985`` is ``Decimal("1.0985")``);
    - ``entry_time``: a naive time (``datetime.now()``) is read as the machine's
      local time and converted to UTC; an aware one is converted to UTC.

    :raises statekit.errors.ValidationError: on bad data, one message naming
        every bad field (``reason`` lists them); the pydantic error is its cause.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol1: str = Field(min_length=1)
    symbol2: str = Field(min_length=1)
    direction: Direction
    entry_time: LocalTime
    quantity: Annotated[Money, Field(gt=0)]
    entry_price: Annotated[Money, Field(gt=0)]

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise _invalid(exc) from exc

    @classmethod
    def model_validate(
        cls,
        obj: Any,
        *,
        strict: bool | None = None,
        from_attributes: bool | None = None,
        context: Any | None = None,
        **kwargs: Any,
    ) -> Self:
        """Like :meth:`pydantic.BaseModel.model_validate`, raising statekit's ValidationError."""
        try:
            return super().model_validate(
                obj, strict=strict, from_attributes=from_attributes, context=context, **kwargs
            )
        except pydantic.ValidationError as exc:
            raise _invalid(exc) from exc

    @property
    def symbol(self) -> str:
        """The pair's name, ``symbol1 + symbol2`` (``EURUSD``)."""
        return self.symbol1 + self.symbol2

    def to_position(self) -> Position:
        """The statekit :class:`~statekit.trading.Position` (pair form) it describes."""
        return Position(
            symbol=self.symbol,
            symbol1=self.symbol1,
            symbol2=self.symbol2,
            direction=self.direction,
            entry_time=self.entry_time,
            quantity=Decimal(self.quantity),
            entry_price=Decimal(self.entry_price),
        )


def _invalid(exc: pydantic.ValidationError) -> ValidationError:
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or '(position)'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    ]
    return ValidationError(
        "invalid position: " + "; ".join(problems), key=None, reason="; ".join(problems)
    )
