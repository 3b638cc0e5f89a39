"""``statekit plugins``: every plugin, where it comes from, what it registered, why it failed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from statekit.cli import output
from statekit.cli.options import options, scrub, scrub_data


def plugins(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List every plugin: where it comes from, what it registered, why it failed.

    Exit codes: 0 listed (even when some plugins failed; see doctor), 1 bad configuration.
    """
    opts = options(ctx)
    with opts.reporting():
        infos = opts.host().plugins()
    if as_json:
        opts.print_json(scrub_data([info.as_dict() for info in infos], opts.urls()))
        return
    table = output.table("plugin", "distribution", "version", "backends", "validators", "status")
    for info in infos:
        if info.error:
            status = Text("failed: " + scrub(info.error, opts.urls()), style="red")
        elif info.blocked:
            status = Text("blocked", style="yellow")
        else:
            status = Text("ok", style="green")
        table.add_row(
            Text(info.name),
            Text(info.distribution + (" (built-in)" if info.builtin else "")),
            Text(info.version),
            Text(", ".join(info.backends) or "-"),
            Text(", ".join(info.validators) or "-"),
            status,
        )
    opts.print(table)
