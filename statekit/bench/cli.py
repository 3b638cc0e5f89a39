"""The command line: ``python -m statekit.bench [BENCHMARK | --backend BENCHMARK] ...``.

One JSON object per line per workload on stdout; a user mistake is one line on
stderr and a non-zero exit (docs/benchmarks.md lists every option).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from statekit.bench.harness import (
    DEFAULT_N,
    DEFAULT_ROUNDS,
    DEFAULT_VERSIONS,
    BenchConfig,
    count,
    duration,
    positive,
)
from statekit.bench.registry import COMMANDS, command, names, run
from statekit.errors import StatekitError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m statekit.bench",
        description="statekit writes next to the same durable work written by hand; "
        "one JSON line per workload.",
    )
    parser.add_argument(
        "name",
        nargs="?",
        choices=[*names(), "all"],
        metavar="BENCHMARK",
        help=f"which to run: {', '.join([*names(), 'all'])} (same as --backend)",
    )
    parser.add_argument(
        "--backend",
        choices=[*names(), "all"],
        default=None,
        help="which backend to measure, or all installed (default sqlite)",
    )
    parser.add_argument(
        "--url", default=None, help="server URL for a server backend (postgresql, redis)"
    )
    parser.add_argument(
        "--n", type=positive, default=DEFAULT_N, help="writes per round (default %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=positive, default=DEFAULT_ROUNDS, help="rounds (default %(default)s)"
    )
    parser.add_argument(
        "--positions",
        "--keys",
        dest="keys",
        type=positive,
        default=BenchConfig().keys,
        help="distinct keys the writes rotate over; the legacy benchmark's positions "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--versions",
        type=positive,
        default=DEFAULT_VERSIONS,
        help="versions of the long history of the history benchmark (default %(default)s)",
    )
    parser.add_argument(
        "--isolated",
        type=count,
        default=BenchConfig().isolated,
        help="bots benchmark: processes each in a namespace of its own (default %(default)s)",
    )
    parser.add_argument(
        "--shared",
        type=count,
        default=BenchConfig().shared,
        help="bots benchmark: processes sharing one namespace (default %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=duration,
        default=BenchConfig().seconds,
        help="bots benchmark: seconds each phase runs (default %(default)s)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder for the database files (default: the system temp folder); "
        "put it on the disk you care about, not a tmpfs",
    )
    return parser


async def _main(backend: str, config: BenchConfig) -> None:
    for name in names() if backend == "all" else [backend]:
        async for result in run(name, config):
            print(json.dumps(result), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given and given[0] in COMMANDS:  # a benchmark with options of its own
        return command(given[0])(given[1:])
    parser = _parser()
    args = parser.parse_args(given)
    if args.name and args.backend and args.name != args.backend:
        parser.error(f"two benchmarks named: {args.name} and --backend {args.backend}")
    backend = args.name or args.backend or "sqlite"
    if args.dir is not None and not args.dir.is_dir():
        print(f"statekit.bench: --dir {args.dir} is not a folder", file=sys.stderr)
        return 2
    config = BenchConfig(
        n=args.n,
        rounds=args.rounds,
        directory=args.dir,
        url=args.url,
        versions=args.versions,
        keys=args.keys,
        isolated=args.isolated,
        shared=args.shared,
        seconds=args.seconds,
    )
    try:
        asyncio.run(_main(backend, config))
    except (StatekitError, sqlite3.Error, OSError) as exc:
        print(f"statekit.bench: {exc}", file=sys.stderr)
        return 1
    return 0
