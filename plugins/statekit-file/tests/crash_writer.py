"""A writer killed by tests/test_crash.py: writes self-checking values forever.

``python crash_writer.py <url> <seed>`` prints ``ready`` once the store is open,
then puts, batches, deletes and prunes until it is killed.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys

from statekit_file.backend import FileBackend

from statekit import StateStore
from statekit.backend import JSON, Write

KEYS = ["pos/a", "pos/b", "pos/c/../x", "pos/日本"]
PAIR = ("pair/1", "pair/2")  # always written together, in one batch


def value(key: str, n: int, size: int) -> JSON:
    """A value that carries its own checksum: a torn or mixed value cannot pass."""
    check = hashlib.sha256(f"{key}|{n}|{size}".encode()).hexdigest()[:16]
    return {"key": key, "n": n, "pad": "x" * size, "check": check}


async def main(url: str, seed: int) -> None:
    rng = random.Random(seed)
    # The backend itself, not statekit.open: that would import every installed plugin
    # (ccxt's alone takes a second), once per kill.
    async with StateStore(await FileBackend.open(url)) as store:
        print("ready", flush=True)
        n = 0
        while True:
            n += 1
            size = rng.choice([0, 10, 1000, 30_000, 200_000])
            roll = rng.random()
            if roll < 0.5:
                key = rng.choice(KEYS)
                await store.put(key, value(key, n, size))
            elif roll < 0.8:
                await store.batch([Write(k, value(k, n, size)) for k in PAIR])
            elif roll < 0.9:
                await store.delete(rng.choice(KEYS))
            else:
                key = rng.choice(KEYS)
                head = await store.get(key)
                if head is not None:
                    await store.backend.prune(key, head.version - 2)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
