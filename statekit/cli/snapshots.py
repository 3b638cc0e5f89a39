"""``statekit snapshot create|list|restore|diff``: snapshots of the live keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from statekit.cli import output
from statekit.cli.options import options
from statekit.errors import ConflictError
from statekit.snapshots import SNAPSHOT_PREFIX

snapshot_app = typer.Typer(
    help="Create, list, restore and diff snapshots of the live keys.", no_args_is_help=True
)


def _keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context,
    description: Annotated[
        str, typer.Option("--description", help="What the snapshot is for.")
    ] = "",
    prefix: Annotated[str, typer.Option("--prefix", help="Capture only keys under it.")] = "",
    snapshot_id: Annotated[
        str | None, typer.Option("--id", help="The snapshot id (default: time + random).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the snapshot's id, time and keys as JSON.")
    ] = False,
) -> None:
    """Capture every live key (under --prefix) and print the snapshot id.

    Exit codes: 0 created, 1 the id exists already or any error.
    """
    opts = options(ctx)
    with opts.reporting():
        try:
            info = opts.run(
                lambda store: store.snapshots.create(
                    description, prefix=prefix, snapshot_id=snapshot_id
                )
            )
        except ConflictError as exc:
            if exc.key != SNAPSHOT_PREFIX + (snapshot_id or ""):
                raise
            opts.fail(f"snapshot {snapshot_id!r} exists already; choose another --id")
    if as_json:
        opts.print_json(info.as_dict())
        return
    opts.print(Text(f"snapshot {info.id}: {_keys(info.keys)}"))


@snapshot_app.command("list")
def snapshot_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List every snapshot, oldest first.

    Exit codes: 0 listed (also when there are none), 1 any error.
    """
    opts = options(ctx)
    with opts.reporting():
        infos = opts.run(lambda store: store.snapshots.list())
    if as_json:
        opts.print_json([info.as_dict() for info in infos])
        return
    if not infos:
        opts.print("no snapshots")
        return
    table = output.table()
    # Ids are typed back in (restore, diff): keep each on one line, never cut one.
    longest = max(len(info.id) for info in infos)
    table.add_column("id", min_width=min(longest, 40), overflow="fold")
    table.add_column("created", no_wrap=True, min_width=20)
    for heading in ("keys", "prefix", "description"):
        table.add_column(heading)
    for info in infos:
        table.add_row(
            Text(info.id),
            output.when(info.created_at, "seconds"),
            Text(str(info.keys)),
            Text(info.prefix),
            Text(info.description),
        )
    opts.print(table)


@snapshot_app.command("restore")
def snapshot_restore(
    ctx: typer.Context,
    snapshot_id: Annotated[str, typer.Argument(metavar="ID", help="The snapshot to restore.")],
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"snapshot": ID, "changed": N} as JSON.')
    ] = False,
) -> None:
    """Make the live keys under the snapshot's prefix equal to snapshot ID.

    Restoring appends new versions (and deletions), so it is in the history and can be
    undone by restoring an earlier snapshot. Exit codes: 0 restored, 1 unknown snapshot
    or any error.
    """
    opts = options(ctx)
    with opts.reporting():
        changed = opts.run(lambda store: store.snapshots.restore(snapshot_id))
    if as_json:
        opts.print_json({"snapshot": snapshot_id, "changed": changed})
        return
    opts.print(Text(f"restored snapshot {snapshot_id}: {_keys(changed)} changed"))


@snapshot_app.command("diff")
def snapshot_diff(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(metavar="A", help="The snapshot to compare from.")],
    b: Annotated[
        str | None,
        typer.Argument(metavar="B", help="The snapshot to compare to (default: the live state)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {added, removed, changed} as JSON.")
    ] = False,
) -> None:
    """Show what changed from snapshot A to snapshot B, or to the live state.

    Exit codes: 0 compared (also when nothing differs), 1 unknown snapshot or any error.
    """
    opts = options(ctx)
    with opts.reporting():
        diff = opts.run(lambda store: store.snapshots.diff(a, b))
    if as_json:
        opts.print_json(diff.as_dict())
        return
    if not diff:
        opts.print(Text(f"no differences between {a} and {b or 'the live state'}"))
        return
    table = output.table("", title=f"{a} → {b or 'live'}")
    table.add_column("key", overflow="fold")
    table.add_column("before")
    table.add_column("after")
    rows: list[tuple[str, Text, Text, Text]] = []
    rows += [
        (k, Text("+", style="green"), Text(""), output.short(v)) for k, v in diff.added.items()
    ]
    rows += [
        (k, Text("-", style="red"), output.short(v), Text("")) for k, v in diff.removed.items()
    ]
    rows += [
        (k, Text("~", style="yellow"), output.short(old), output.short(new))
        for k, (old, new) in diff.changed.items()
    ]
    for key, mark, before, after in sorted(rows, key=lambda row: row[0]):
        table.add_row(mark, Text(key), before, after)
    opts.print(table)
