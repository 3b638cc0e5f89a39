"""One writer process of the fallback campaign (tests/test_fallback_campaign.py).

``python fallback_campaign_writer.py URL JOURNAL NAME GENERATION SEED LOG STOP LOSE``

Writes through a tiered store with a fallback journal until the file STOP exists:
puts of its own keys, ``update()`` increments of the shared ``counter`` and atomic
batches over three keys of its own, each tagged ``meta["op"]``. Before each call it
logs ``try <op> <tag>``, after an answer ``ack <op> <tag> <version>`` or ``fail <tag>``
(line-buffered: a SIGKILL loses nothing logged). With probability LOSE, a replayed
chunk commits and its answer is then lost (the fault the journal must survive).
At STOP it waits for its journal to drain and prints its figures as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from typing import Any

import statekit
from statekit.backend import Write
from statekit.config import Settings
from statekit.errors import BackendUnavailable, ConflictError
from statekit.tiered import TieredBackend


async def run(
    url: str,
    journal: str,
    name: str,
    generation: int,
    seed: int,
    log_path: str,
    stop: str,
    lose: float,
) -> dict[str, Any]:
    rng = random.Random(seed)
    store = await statekit.open(url, settings=Settings(), fallback=journal)
    backend = store.backend
    assert isinstance(backend, TieredBackend)
    replay = backend._fallback
    assert replay is not None
    send = replay._send

    async def lossy_send(chunk: Any, landed: Any) -> Any:
        result = await send(chunk, landed)
        if rng.random() < lose:
            raise BackendUnavailable("injected: the replay committed, its answer was lost")
        return result

    replay._send = lossy_send  # type: ignore[method-assign]
    acks = 0
    with open(log_path, "a", buffering=1) as log:
        seq = 0
        while not os.path.exists(stop):
            seq += 1
            tag = f"{name}.{generation}.{seq}"
            meta = {"op": tag}
            draw = rng.random()
            op = "put" if draw < 0.5 else "inc" if draw < 0.75 else "batch"
            log.write(f"try {op} {tag}\n")
            try:
                if op == "put":
                    record = await store.put(f"{name}/k{seq % 5}", {"tag": tag}, meta=meta)
                elif op == "inc":
                    record = await store.update("counter", lambda v: (v or 0) + 1, meta=meta)
                else:
                    keys = [f"{name}/g{i}" for i in range(3)]
                    (record, *_) = await store.batch(
                        [Write(k, {"tag": tag}, meta=meta) for k in keys]
                    )
            except (BackendUnavailable, ConflictError) as exc:
                log.write(f"fail {tag} {type(exc).__name__}\n")
                await asyncio.sleep(0.01)
                continue
            log.write(f"ack {op} {tag} {record.version}\n")
            acks += 1
            await asyncio.sleep(rng.uniform(0.001, 0.005))
    print(f"stop seen at {time.time():.3f}", file=sys.stderr)
    async with asyncio.timeout(180):
        await backend.settle()
    print(f"settled at {time.time():.3f}", file=sys.stderr)
    health = await store.health()
    await store.aclose()
    return {"acks": acks, "fallback": health.detail["fallback"]}


if __name__ == "__main__":
    url, journal, name, generation, seed, log_path, stop, lose = sys.argv[1:9]
    figures = asyncio.run(
        run(url, journal, name, int(generation), int(seed), log_path, stop, float(lose))
    )
    print(json.dumps(figures))
