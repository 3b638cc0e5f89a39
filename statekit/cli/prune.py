"""``statekit prune``: drop old history by a retention rule (:class:`statekit.Retention`).

The head version of a key is never dropped, so pruning changes no value a reader
sees now; it only shortens how far back history and ``--as-of`` reach (an ``--as-of``
before the cut is then an error, never a guess). ``--prefix`` and ``--all`` prune the
live keys (``StateStore.apply_retention``); a deleted key's history is pruned by
naming it. Snapshots keep their captured values whatever is pruned.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.text import Text

from statekit.cli.options import options
from statekit.errors import ValidationError
from statekit.store import Retention, StateStore

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m`` (or ``15min``), ``12h``, ``30d``, ``2w`` as a timedelta."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValidationError(
            f"--older-than {text!r} is not a duration; e.g. 90s, 15m, 12h, 30d, 2w",
            reason="duration",
        )
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNITS[unit.lower()])


def prune(
    ctx: typer.Context,
    key: Annotated[
        str | None, typer.Argument(help="The key whose history to prune (else --prefix/--all).")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Prune every live key under this prefix.")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Prune every live key.")] = False,
    keep_last: Annotated[
        int | None, typer.Option("--keep-last", min=1, help="Keep the newest N versions.")
    ] = None,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Drop versions written longer ago: 90s, 12h, 30d, 2w."),
    ] = None,
    before_version: Annotated[
        int | None,
        typer.Option("--before-version", min=2, help="Drop the versions below N (KEY only)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"dropped": N} as JSON.')] = False,
) -> None:
    """Drop the history a retention rule does not keep; the head is always kept.

    Give KEY, --prefix P or --all, and at least one rule; with several rules a version
    is kept when any rule keeps it. Exit codes: 0 pruned (also when nothing was
    dropped), 1 no target or no rule, a backend without history, or any error.
    """
    opts = options(ctx)
    with opts.reporting():
        targets = [t for t in (key is not None, prefix is not None, every) if t]
        if len(targets) != 1:
            raise ValidationError(
                "say what to prune: a KEY, --prefix P or --all (one of them)", reason="target"
            )
        if before_version is not None and key is None:
            raise ValidationError(
                "--before-version cuts one key's history: give a KEY", reason="retention"
            )
        if (keep_last, older_than, before_version) == (None, None, None):
            raise ValidationError(
                "say what to keep: --keep-last N, --older-than DURATION or --before-version N",
                reason="retention",
            )
        retention = Retention(
            keep_last=keep_last,
            older_than=None if older_than is None else parse_duration(older_than),
            before_version=before_version,
        )

        async def work(store: StateStore) -> int:
            if key is not None:
                return await store.prune(key, retention)
            return await store.apply_retention(retention, prefix or "")

        dropped = opts.run(work)
    if as_json:
        opts.print_json({"dropped": dropped})
        return
    where = repr(key) if key is not None else f"keys under {prefix!r}" if prefix else "every key"
    opts.print(Text(f"pruned {dropped} version{'' if dropped == 1 else 's'} of {where}"))
