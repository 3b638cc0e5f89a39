"""``statekit migrate``: legacy TradingStateManager JSON files into a store, with a report
(the work itself is :mod:`statekit.compat.migration`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from statekit.cli import output
from statekit.cli.options import Options, missing_store, options, scrub, scrub_data
from statekit.config import Settings
from statekit.redact import redact_url

if TYPE_CHECKING:
    from rich.progress import Progress


def _legacy_files(path: Path) -> int:
    """How many legacy files ``statekit migrate`` reads at ``path`` (for the progress bar)."""
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".json")
    return 1


def migrate(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="Legacy TradingStateManager JSON files, or folders of them (*.json).",
            show_default=False,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and compare only: write nothing.")
    ] = False,
    backup: Annotated[
        bool,
        typer.Option("--backup", help="Copy each file to <name>.bak beside it before migrating."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the reports (one per PATH) as JSON.")
    ] = False,
) -> None:
    """Migrate legacy JSON state files into the store, with a report.

    Into --url or the configured store, else the SQLite file beside each PATH
    (state.json -> state.statekit.db; a folder -> <folder>/statekit.db). A folder's
    files are migrated oldest first. Sources are never modified; running again
    changes nothing. The totals and the items that failed come first, then one row
    per file. Exit codes: 0 every item migrated (or would), 1 an item failed,
    a PATH does not exist, or any error.
    """
    from statekit.compat.legacy_state import LegacyState, settings_for
    from statekit.compat.migration import MigrationReport, migrate_source

    opts = options(ctx)
    with opts.reporting():
        for path in paths:
            if not path.exists():
                opts.fail(f"{path}: no such file or folder")
        base = opts.settings()
        if opts.url:
            base = base.model_copy(deep=True)
            base.url = opts.url  # type: ignore[assignment]  # validated into a SecretStr
        progress = _progress(opts)
        task = progress.add_task("migrating", total=sum(_legacy_files(p) for p in paths))

        def advance(part: MigrationReport) -> None:
            progress.update(task, advance=1, description=Path(part.source).name)

        async def work() -> list[MigrationReport]:
            reports: list[MigrationReport] = []
            for path in paths:
                settings, absent = _target(settings_for(path, base), dry_run)
                legacy = LegacyState(settings)
                try:
                    await legacy.open()
                    report = await migrate_source(
                        legacy, path, dry_run=dry_run, backup=backup, on_file=advance
                    )
                finally:
                    await legacy.aclose()
                if absent is not None:
                    for part in (report, *report.files):
                        part.target = absent
                reports.append(report)
            return reports

        with progress:
            reports = asyncio.run(work())
    failed = sum(r.failed_items for r in reports)
    total = sum(r.total_items for r in reports)
    if as_json:
        _print_json(opts, reports, dry_run)
    else:
        _print_migration(opts, reports, dry_run)
    if failed:
        where = "in the report" if as_json else "listed above"
        opts.fail(f"{failed} of {total} items failed to migrate ({where})")


def _target(settings: Settings, dry_run: bool) -> tuple[Settings, str | None]:
    """The settings to migrate with and, when a dry run's store does not exist yet, its
    URL as reports show it: the dry run then compares with an empty store in memory,
    so that reading creates nothing."""
    url = settings.store_url()
    if not dry_run or missing_store(url) is None:
        return settings, None
    empty = settings.model_copy(deep=True)
    empty.url = "memory://"  # type: ignore[assignment]  # validated into a SecretStr
    return empty, f"{redact_url(url)} (does not exist yet)"


def _progress(opts: Options) -> Progress:
    """A progress bar on stderr, only on a terminal (none in logs and pipes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=opts.err,
        transient=True,
        disable=not opts.err.is_terminal,
    )


def _print_json(opts: Options, reports: list[Any], dry_run: bool) -> None:
    failed = sum(r.failed_items for r in reports)
    report = {
        "ok": not failed,
        "dry_run": dry_run,
        "total_items": sum(r.total_items for r in reports),
        "failed_items": failed,
        "reports": [r.as_dict() for r in reports],
    }
    opts.print_json(scrub_data(report, opts.urls()))


def _print_migration(opts: Options, reports: list[Any], dry_run: bool) -> None:
    """The totals and the failures first (they must not scroll away behind a table of
    hundreds of files), then one row per file."""
    files = [part for r in reports for part in (r.files or [r])]
    for store in dict.fromkeys(part.target for part in files):
        line = Text("store: ", style="bold") + Text(scrub(store, opts.urls()))
        opts.out.print(line, soft_wrap=True)
    ok = sum(part.successful_items for part in files)
    failures = [(part.source, f) for part in files for f in part.failures]
    summary = Text("dry run, nothing written: " if dry_run else "", style="bold")
    summary.append(f"{len(files)} file{'' if len(files) == 1 else 's'}, ")
    summary.append(f"{ok + len(failures)} items: {ok} {'would migrate' if dry_run else 'migrated'}")
    summary.append(f", {len(failures)} failed", style="bold red" if failures else "")
    opts.print(summary)
    if failures:
        problems = output.table("source", "item", "reason", title="not migrated")
        for source, failure in failures:
            problems.add_row(Text(source), Text(failure.item), Text(failure.reason))
        opts.print(problems)
    title = "migration (dry run: nothing written)" if dry_run else "migration"
    table = output.table(
        "source", "items", "ok", "failed", "written", "same", "deleted", title=title
    )
    table.add_column("note")
    for part in files:
        notes = ["already migrated"] if part.already_migrated else []
        if part.backup:
            notes.append(f"backup {Path(part.backup).name}")
        table.add_row(
            Text(part.source),
            Text(str(part.total_items)),
            Text(str(part.successful_items)),
            Text(str(part.failed_items), style="red" if part.failed_items else ""),
            Text(str(part.written)),
            Text(str(part.unchanged)),
            Text(str(part.deleted)),
            Text(", ".join(notes)),
        )
    opts.print(table)
