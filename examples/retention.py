"""Retention: drop old history, keep every head (docs/operations.md#retention).

Writes 30 versions of a position into ./retention-demo.db, then keeps the last 10
with ``apply_retention`` over the ``position/`` prefix, as a nightly job would, and
shows what a read of a moment whose version was dropped answers.

    python examples/retention.py
"""

from __future__ import annotations

import asyncio

import statekit
from statekit import HistoryUnavailable, Retention


async def main() -> None:
    async with await statekit.open("sqlite:///retention-demo.db") as store:
        first = await store.put("position/EURUSD", {"quantity": 100_000}, kind="position")
        for fill in range(1, 30):
            await store.put("position/EURUSD", {"quantity": 100_000 + fill}, kind="position")
        head = await store.get("position/EURUSD")
        assert head is not None
        before = len(await store.history("position/EURUSD", limit=1000))

        dropped = await store.apply_retention(Retention(keep_last=10), prefix="position/")

        kept = await store.history("position/EURUSD", limit=1000)
        print(f"head v{head.version}: {before} versions, {dropped} dropped")
        print(f"history now v{kept[-1].version}..v{kept[0].version} ({len(kept)} versions)")
        try:
            await store.get("position/EURUSD", as_of=first.at)
        except HistoryUnavailable:
            print(f"as_of the time of v{first.version}: HistoryUnavailable (pruned)")
        else:
            raise SystemExit("as_of a pruned moment answered a value")


if __name__ == "__main__":
    asyncio.run(main())
