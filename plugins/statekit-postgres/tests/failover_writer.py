"""A writer that carries on across a failover, for test_standby_promotion.py.

It appends ``{"seq": 1}``, ``{"seq": 2}``... to one key (its own: no other writer
touches it) through a multi-host URL, with ``expect`` = the head it read, and
reports each acknowledged seq. When a put fails with BackendUnavailable (the
primary died, no primary yet) its outcome is unknown: the writer reads the head
once a primary answers again and either finds that seq there (it landed: reported
as *resolved*, not acknowledged) or writes it again. So the key's history must
hold 1, 2, 3... each exactly once, with every acknowledged seq among them.

As a process: ``python failover_writer.py URL KEY STOP_FILE SEED`` prints
``ready``, then ``acked <seq>`` / ``resolved <seq>`` lines, until STOP_FILE exists.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import Callable

import statekit
from statekit.errors import BackendUnavailable


async def write_until(
    url: str,
    key: str,
    stop: Callable[[], bool],
    report: Callable[[str, int], None],
    seed: int,
) -> None:
    """Append seq after seq to ``key`` until ``stop()``; ``report(kind, seq)`` each."""
    rng = random.Random(seed)
    async with await statekit.open(url) as store:
        pending = 0  # a seq whose put failed without an answer: landed or not?
        while not stop():
            try:
                head = await store.get(key)
                version, last = (head.version, head.data["seq"]) if head else (0, 0)
                if pending and last == pending:
                    report("resolved", pending)
                    pending = 0
                    continue
                seq = pending or last + 1
                pending = seq
                await store.put(key, {"seq": seq}, expect=version)
                pending = 0
                report("acked", seq)
            except BackendUnavailable:
                await asyncio.sleep(0.02)  # no primary yet
            await asyncio.sleep(rng.uniform(0, 0.004))


def main() -> None:
    url, key, stop_file, seed = sys.argv[1:5]

    def report(kind: str, seq: int) -> None:
        print(kind, seq, flush=True)

    print("ready", flush=True)
    asyncio.run(write_until(url, key, lambda: os.path.exists(stop_file), report, int(seed)))


if __name__ == "__main__":
    main()
