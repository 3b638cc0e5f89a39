"""statekit end to end on the embedded SQLite default: what `make example` shows.

Writes a position, loses a race on purpose (ConflictError), lets update() retry
concurrent fills until none is lost, reads the audit trail and an as-of view,
then snapshots, changes and restores the book. Run it again: it carries on from
what the previous run stored. `make example` runs it on a throwaway file, never on
the ./statekit.db that `make run` serves, so it prints what the README shows.

The kinds here (``position``, ``balance``, ``pair``) are the core's free-form labels.
The trading views (``GET /positions``, the dashboard) list the trading layer's layout
instead: ``position/<symbol>`` of kind ``trading.position`` (README, docs/trading.md).

    python examples/quickstart.py [sqlite:///path.db]
"""

from __future__ import annotations

import asyncio
import sys

import statekit
from statekit import ConflictError, Write
from statekit.backend import JSON


def add_fill(qty: int) -> object:
    def apply(position: JSON) -> JSON:
        current = position if isinstance(position, dict) else {"qty": 0, "fills": 0}
        assert isinstance(current["qty"], int) and isinstance(current["fills"], int)
        return {"qty": current["qty"] + qty, "fills": current["fills"] + 1}

    return apply


async def main(url: str | None) -> None:
    async with await statekit.open(url) as store:
        health = await store.health()
        print(
            f"store: {store.backend.name} {health.detail.get('path', '')} "
            f"({health.latency_ms:.2f} ms round trip)"
        )

        # 1. write: every put is a new version of the key, stamped in UTC
        pos = await store.put(
            "position/EURUSD",
            {"qty": 100_000, "fills": 1},
            kind="position",
            meta={"by": "quickstart", "note": "opened"},  # what REST and the CLI store
        )
        print(f"put    position/EURUSD -> version {pos.version} at {pos.at.isoformat()}")

        # 2. conflict: a writer holding a stale version is refused, nothing is written
        try:
            await store.put(
                "position/EURUSD",
                {"qty": 0, "fills": 0},
                kind="position",
                expect=pos.version - 1 if pos.version > 1 else 99,
            )
        except ConflictError as err:
            print(f"refuse stale write: expected v{err.expected}, head is v{err.actual}")

        # 3. retry: 20 concurrent fills through update(); optimistic locking loses none
        before = pos.data["qty"] if isinstance(pos.data, dict) else 0
        await asyncio.gather(*(store.update("position/EURUSD", add_fill(1_000)) for _ in range(20)))
        now = await store.get("position/EURUSD")
        assert now is not None and isinstance(now.data, dict)
        print(
            f"update 20 concurrent fills: qty {before} -> {now.data['qty']} "
            f"(version {now.version}, none lost: {now.data['qty'] == before + 20_000})"
        )

        # 4. history and time travel
        trail = await store.history("position/EURUSD", limit=3)
        print(
            "history (newest first): "
            + ", ".join(
                f"v{r.version} qty={r.data['qty'] if isinstance(r.data, dict) else r.data}"
                for r in trail
            )
        )
        then = await store.get("position/EURUSD", as_of=pos.at)
        print(f"as of  {pos.at.isoformat()}: version {then.version if then else None}")

        # 5. atomic multi-key save, then snapshot / change / diff / restore
        await store.batch(
            [
                Write("balance/USD", {"free": "50000.00"}, "balance"),
                Write("pair/EURUSD", {"position": "long", "cooldown": 0}, "pair"),
            ]
        )
        snap = await store.snapshots.create("quickstart checkpoint")
        print(f"snapshot {snap.id}: {snap.keys} keys")
        await store.put("pair/EURUSD", {"position": "flat", "cooldown": 3}, kind="pair")
        await store.delete("balance/USD")
        diff = await store.snapshots.diff(snap.id)
        print(
            f"diff   since snapshot: changed {sorted(diff.changed)}, "
            f"removed {sorted(diff.removed)}, added {sorted(diff.added)}"
        )
        changed = await store.snapshots.restore(snap.id)
        print(
            f"restore {snap.id}: {changed} keys rewritten; "
            f"diff now empty: {not await store.snapshots.diff(snap.id)}"
        )
        keys = [r.key async for r in store.scan()]
        print(f"live keys: {keys}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
