"""A lease with a fencing token: a stalled holder's late write is refused.

Two workers (each with its own connection, as two processes would have) share
the lease "rebalancer" on one SQLite file. The first takes it and writes, then
stalls past its ttl; the second takes over and writes; the first wakes up and
writes again: FencedOff, nothing stored, the second's value stands. Run it again:
the tokens carry on from the previous run.

    python examples/leases.py [sqlite:///path.db]
"""

from __future__ import annotations

import asyncio
import sys

import statekit
from statekit import FencedOff
from statekit.trading.leases import Lease

TTL = 0.3  # seconds; short for the demo. In production: well above clock skew and pauses.


async def main(url: str) -> None:
    async with await statekit.open(url) as first_store, await statekit.open(url) as second_store:
        first = Lease(first_store, "rebalancer", ttl=TTL, owner="worker-1")
        second = Lease(second_store, "rebalancer", ttl=TTL, owner="worker-2")

        token = await first.acquire(timeout=10)
        print(f"worker-1 holds the lease, token {token}")
        await first_store.put("target/weights", {"BTC": "0.6", "ETH": "0.4"}, fence=first)
        print(f"worker-1 wrote its target weights; its token moved on to {first.token}")

        # worker-1 stalls (GC pause, swapped out, a debugger) and does not renew
        await asyncio.sleep(TTL * 1.5)

        token = await second.acquire(timeout=10)  # the first's lease ran out: taken over
        print(f"worker-2 took the lease over, token {token}")
        await second_store.put("target/weights", {"BTC": "0.5", "ETH": "0.5"}, fence=second)
        print("worker-2 wrote its target weights")

        try:
            await first_store.put("target/weights", {"BTC": "0.9", "ETH": "0.1"}, fence=first)
            print("worker-1's late write landed (this must not happen)")
        except FencedOff as exc:
            print(
                f"worker-1's late write was refused: FencedOff (its token {exc.token}, "
                f"the lease is at {exc.current} now)"
            )
        try:
            await first.renew()
        except FencedOff:
            print("worker-1's renew was refused too: it knows it lost the lease")

        weights = await first_store.get("target/weights")
        assert weights is not None
        print(f"target/weights = {weights.data} (version {weights.version})")
        holder = await second.current()
        assert holder is not None
        print(f"lease held by {holder.owner} until {holder.expires_at.isoformat()}")
        print(f"worker-2 released the lease: {await second.release()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///leases.db"))
