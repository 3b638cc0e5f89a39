"""``statekit get``, ``put``, ``delete``, ``history`` and ``ls``: read and write one key,
list its versions, list the live keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

import statekit
from statekit.backend import Record
from statekit.cli import output
from statekit.cli.options import options
from statekit.errors import NotFound, ValidationError
from statekit.store import RESERVED_PREFIX, StateStore

META_EXAMPLE = '{"by": "ana", "note": "rebalance"}'
"""What ``--meta`` takes, in every hint: a JSON object; ``by`` and ``note`` are the
names the REST API (``user_id``, ``description``) and TradingState store."""


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        shown = text if len(text) <= 40 else text[:39] + "…"
        raise ValidationError(
            f"{what} {shown!r} is not JSON; to store it as a string, quote it: "
            f"'{json.dumps(shown, ensure_ascii=False)}'",
            reason="not JSON",
        ) from None
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply to read", reason="too deep") from None


def _parse_meta(text: str | None) -> dict[str, Any]:
    """``--meta``: a JSON object, or one clear error saying so (never "quote it")."""
    if text is None:
        return {}
    shown = text if len(text) <= 40 else text[:39] + "…"
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise ValidationError(
            f"--meta {shown!r} is not JSON; give a JSON object, e.g. '{META_EXAMPLE}'",
            reason="meta",
        ) from None
    except RecursionError:
        raise ValidationError("--meta is nested too deeply to read", reason="too deep") from None
    if not isinstance(meta, dict):
        raise ValidationError(
            f"--meta must be a JSON object, e.g. '{META_EXAMPLE}', not {shown!r}",
            reason="meta",
        )
    return meta


MetaOption = typer.Option(
    "--meta", help=f"A JSON object stored with the version (who, why): '{META_EXAMPLE}'."
)
ExpectOption = typer.Option(
    "--expect",
    min=0,
    help="Write only if the head version is N (0 = only if the key has no live value).",
)


def _parse_time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"--as-of {text!r} is not an ISO 8601 time; e.g. 2024-05-01T12:00:00Z",
            reason="as_of",
        ) from None
    # A time without an offset is taken as UTC, the zone every record is stamped in.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def get(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key to read.")],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="ISO 8601 time: the record current then (no offset = UTC).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show the live record of KEY: value, version, kind, time and meta.

    Exit codes: 0 found, 1 missing key (or deleted, or no value at --as-of) or any error.
    """
    opts = options(ctx)
    with opts.reporting():
        at = _parse_time(as_of) if as_of else None
        record = opts.run(lambda store: store.get(key, as_of=at))
    if record is None:
        when = f" at {at.isoformat()}" if at else ""
        opts.fail(f"key {key!r} has no live value{when}")
    if as_json:
        opts.print_json(output.record_json(record))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("key", Text(record.key))
    table.add_row("version", Text(str(record.version)))
    table.add_row("kind", Text(record.kind))
    table.add_row("at", output.when(record.at))
    table.add_row("meta", Text(output.compact(dict(record.meta))))
    table.add_row("value", Text(json.dumps(record.data, indent=2, ensure_ascii=False)))
    opts.print(table)


def put(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key to write.")],
    value: Annotated[
        str, typer.Argument(help="The new value as JSON text: 42, '\"text\"', '{\"qty\": 1}'.")
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="What the value is (default: the key's kind, else state); trading.position "
            "under position/<symbol> is a position of GET /positions.",
        ),
    ] = None,
    expect: Annotated[int | None, ExpectOption] = None,
    meta: Annotated[str | None, MetaOption] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the stored record as JSON.")
    ] = False,
) -> None:
    """Store VALUE (JSON) as the new version of KEY and print that version.

    The only command that creates the store when it does not exist yet. Exit codes:
    0 stored, 1 bad JSON, a failed --expect (conflict), a refused value or any error.
    """
    opts = options(ctx)
    with opts.reporting():
        data = _parse_json(value, "VALUE")
        changes = _parse_meta(meta)

        async def write(store: StateStore) -> Record:
            # Without --kind the key keeps its kind, as store.update() and delete() do.
            current = None if kind is not None else await store.get(key)
            return await store.put(
                key,
                data,
                kind=kind or (current.kind if current else "state"),
                meta=changes,
                expect=statekit.ANY if expect is None else expect,
            )

        record = opts.run(write, create=True)
    if as_json:
        opts.print_json(output.record_json(record))
        return
    opts.print(Text(f"{record.key}: version {record.version}"))


def history(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key whose versions to list.")],
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N versions.")] = 20,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="Start from version 1 instead of the newest.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the versions of KEY (deletions included), newest first.

    Exit codes: 0 listed, 1 the key has no history or any error.
    """
    opts = options(ctx)
    with opts.reporting():
        records = opts.run(
            lambda store: store.history(key, limit=limit, newest_first=not oldest_first)
        )
    if not records:
        opts.fail(f"key {key!r} has no history")
    if as_json:
        opts.print_json([output.record_json(r) for r in records])
        return
    table = output.table("version", title=f"history of {key}")
    table.add_column("at", no_wrap=True, min_width=27)
    for heading in ("kind", "value", "meta"):
        table.add_column(heading)
    for r in records:
        shown = Text("(deleted)", style="dim") if r.deleted else output.short(r.data)
        table.add_row(
            Text(str(r.version)), output.when(r.at), Text(r.kind), shown, output.short(dict(r.meta))
        )
    opts.print(table)


def delete(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key to delete.")],
    expect: Annotated[
        int | None,
        typer.Option("--expect", min=1, help="Delete only if the head version is N."),
    ] = None,
    meta: Annotated[str | None, MetaOption] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the deletion (a tombstone record) as JSON.")
    ] = False,
) -> None:
    """Delete KEY: a tombstone version is appended; the key's history stays.

    Exit codes: 0 deleted, 1 the key has no live value, a failed --expect or any error.
    """
    opts = options(ctx)
    with opts.reporting():
        changes = _parse_meta(meta)

        async def remove(store: StateStore) -> Record:
            if await store.get(key) is None:
                raise NotFound(f"key {key!r} has no live value", key=key, what="key")
            return await store.delete(
                key, meta=changes, expect=statekit.ANY if expect is None else expect
            )

        record = opts.run(remove)
    if as_json:
        opts.print_json(output.record_json(record))
        return
    opts.print(Text(f"{record.key}: deleted (version {record.version})"))


def ls(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this.")] = "",
    kind: Annotated[str | None, typer.Option("--kind", help="Only values of this kind.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N keys.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the live keys (under PREFIX, of --kind) in key order: version, kind, time, value.

    Exit codes: 0 listed (also when there are none), 1 any error.
    """
    opts = options(ctx)

    async def scan(store: StateStore) -> tuple[list[Record], bool]:
        found: list[Record] = []
        async for record in store.scan(prefix, kind):
            if len(found) == limit:
                return found, True
            found.append(record)
        return found, False

    with opts.reporting():
        if prefix.startswith(RESERVED_PREFIX):
            raise ValidationError(
                f"keys under {RESERVED_PREFIX!r} are statekit's own (snapshots: statekit "
                "snapshot list)",
                reason="reserved",
            )
        records, more = opts.run(scan)
    if as_json:
        opts.print_json([output.record_json(r) for r in records])
        return
    if not records:
        opts.print(Text("no keys" + (f" under {prefix!r}" if prefix else "")))
        return
    # Keys and kinds are typed back in (get, history): never cut one; values may be.
    table = output.table()
    table.add_column("key", min_width=min(max(len(r.key) for r in records), 40), overflow="fold")
    table.add_column("version")
    table.add_column("kind", min_width=min(max(len(r.kind) for r in records), 24), overflow="fold")
    table.add_column("at", no_wrap=True, min_width=20)
    table.add_column("value", min_width=16, overflow="ellipsis")
    for r in records:
        table.add_row(
            Text(r.key),
            Text(str(r.version)),
            Text(r.kind),
            output.when(r.at, "seconds"),
            output.short(r.data),
        )
    opts.print(table)
    if more:
        opts.print(Text(f"(first {limit} keys; --limit shows more)", style="dim"))
