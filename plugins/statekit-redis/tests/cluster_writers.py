"""Writers for the failover test, run as a process of their own:

    python cluster_writers.py URL NAME TASKS SEED

Each of TASKS tasks appends ``{"w": <writer>, "i": i}`` to its own key (``NAME-<n>``) for
i = 1, 2, ... (each i sent once: no retry, so an unacknowledged one is present at most once)
until a line arrives on stdin. Prints ``ready`` once writing, then at the end one JSON line:
{"<key>": [the i acknowledged, in order], ...} plus "failed": how many calls failed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from datetime import UTC, datetime

from statekit_redis import RedisBackend

from statekit import BackendUnavailable
from statekit.backend import Write


async def write(
    backend: RedisBackend, key: str, stop: asyncio.Event, rng: random.Random, out: dict[str, list]
) -> int:
    acked: list[int] = []
    out[key] = acked
    failed = 0
    i = 0
    while not stop.is_set():
        i += 1
        try:
            await backend.append([Write(key, {"w": key, "i": i})], datetime.now(UTC))
            acked.append(i)
        except BackendUnavailable:
            failed += 1  # not acknowledged: present once or not at all
            await asyncio.sleep(0.02)
        await asyncio.sleep(rng.uniform(0, 0.01))
    return failed


async def main(url: str, name: str, tasks: int, seed: int) -> None:
    rng = random.Random(seed)
    backend = await RedisBackend.open(url)
    stop = asyncio.Event()
    acked: dict[str, list[int]] = {}
    writers = [
        asyncio.create_task(write(backend, f"{name}-{n}", stop, rng, acked)) for n in range(tasks)
    ]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stop.set()
    failed = sum(await asyncio.gather(*writers))
    await backend.aclose()
    print(json.dumps({"acked": acked, "failed": failed}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
