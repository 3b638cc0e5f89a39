"""How fast statekit writes, next to the same durable work done by hand.

``python -m statekit.bench [BENCHMARK | --backend BENCHMARK] [--n N] [--rounds R] [--dir PATH]``
prints one JSON object per line per workload::

    {"backend": "sqlite", "workload": "put", "n": 1000, "statekit_ops_s": ...,
     "raw_ops_s": ..., "ratio": ..., "durability": "WAL synchronous=FULL", ...}

Each :class:`Workload` is a pair of runners: statekit doing the work through its
public API, and the shortest program written by hand against the database driver
that stores the same rows with the same statements and the same durability. Both
run in one process in interleaved rounds (raw, statekit, raw, statekit...) and
the medians are reported, so machine noise lands on both. ``ratio`` is
``statekit_ops_s / raw_ops_s``: 1.0 would mean statekit costs nothing on top.

A workload may carry reference runners too (``raw_thread``: the raw statements
sent to one worker thread per call, the least any asyncio wrapper of a blocking
driver pays); they are timed in the same rounds and reported beside the pair.

The package, one module per concern:

- :mod:`.harness`: :class:`BenchConfig`, :class:`Workload`, :func:`measure`,
  :class:`Plan`, :func:`sample_value`, :func:`server_url` (what plugin benchmarks use);
- :mod:`.registry`: :data:`BACKENDS`, the ``statekit.bench`` entry-point group, :func:`run`;
- :mod:`.cli`: the command line; :mod:`.__main__` runs it;
- one module per built-in benchmark: :mod:`.sqlite`, :mod:`.tiered`, :mod:`.legacy`,
  :mod:`.events`, :mod:`.locks`, :mod:`.api`, :mod:`.history`, :mod:`.replay`,
  :mod:`.reconcile` (also ``python -m statekit.bench.reconcile`` with every knob),
  and the package :mod:`.peers` (statekit beside the eventsourcing library).

Imports point down only: benchmarks import the store, trading, tiered, api and compat;
nothing outside this package imports it. docs/benchmarks.md says what each pair
compares and why it is fair.
"""

from statekit.bench.cli import main
from statekit.bench.harness import (
    DEFAULT_N,
    DEFAULT_ROUNDS,
    DEFAULT_VERSIONS,
    BatchFn,
    BenchConfig,
    BenchRunner,
    Plan,
    PutFn,
    Result,
    Timed,
    Workload,
    measure,
    sample_value,
    server_url,
)
from statekit.bench.registry import BACKENDS, ENTRY_POINT_GROUP, names, run, runner

__all__ = [
    "BACKENDS",
    "DEFAULT_N",
    "DEFAULT_ROUNDS",
    "DEFAULT_VERSIONS",
    "ENTRY_POINT_GROUP",
    "BatchFn",
    "BenchConfig",
    "BenchRunner",
    "Plan",
    "PutFn",
    "Result",
    "Timed",
    "Workload",
    "main",
    "measure",
    "names",
    "run",
    "runner",
    "sample_value",
    "server_url",
]
