"""The aggregate both sides of the peers benchmark keep: a position, folded in plain Python.

Both sides fold the same events with :func:`change` (plain Python: nothing of eventsourcing
or statekit runs here), so what differs between them is how the events are stored and read.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from statekit.backend import JSON

__all__ = ["OPENING", "SNAPSHOT_EVERY", "Book", "change", "change_at"]

SNAPSHOT_EVERY = 100
"""Both sides take a snapshot of the aggregate every this many events."""
OPENING = (Decimal(5), Decimal(100))
"""The first event: 5 units opened at 100 (the changes then move it between 5 and 6)."""


def change(
    amount: Decimal, entry: Decimal, realized: Decimal, by: Decimal, price: Decimal
) -> tuple[Decimal, Decimal, Decimal]:
    """A position of ``amount`` at ``entry`` changed by ``by`` at ``price``: grown (the
    entry averaged) or shrunk (PnL realized on what was taken off)."""
    after = amount + by
    if (by > 0) == (amount > 0):
        entry = (entry * abs(amount) + price * abs(by)) / abs(after)
    else:
        realized += (price - entry) * -by
    return after, entry, realized


def change_at(i: int) -> tuple[Decimal, Decimal]:
    """The i-th change: grow by 1 and shrink by 1 by turns, at moving prices."""
    return Decimal(1 if i % 2 == 0 else -1), Decimal(100 + i % 50)


@dataclass(slots=True)
class Book:
    """The statekit side's aggregate: what a user keeps in memory between events."""

    amount: Decimal
    entry: Decimal
    realized: Decimal = Decimal(0)

    def apply(self, by: Decimal, price: Decimal) -> None:
        """Fold one change in."""
        self.amount, self.entry, self.realized = change(
            self.amount, self.entry, self.realized, by, price
        )

    def as_json(self) -> dict[str, JSON]:
        """The snapshot's state."""
        return {
            "amount": str(self.amount),
            "entry": str(self.entry),
            "realized": str(self.realized),
        }

    @classmethod
    def from_json(cls, data: JSON) -> Book:
        """Back from :meth:`as_json`."""
        if not isinstance(data, dict):
            raise TypeError(f"not a position: {data!r}")
        return cls(*(Decimal(str(data[name])) for name in ("amount", "entry", "realized")))
