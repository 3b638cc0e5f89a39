"""Migrating legacy JSON state files into a store: one async core, three ways in.

:func:`migrate_source` (async) is the one implementation; the sync API below
(:class:`StateMigrator`, :func:`migrate_legacy_system`, :func:`validate_migration`),
the ``statekit migrate`` command and the managers' ``auto_migrate`` all run it.

The file format and what counts as bad input are in
:mod:`statekit.compat.legacy_format`. The rules:

- **Replace, per section.** A file's ``active_positions`` replaces the stored
  positions (symbols not in the file are deleted), likewise ``pair_states``;
  a section the file does not have is left alone; the portfolio is replaced
  when the file has one. One atomic batch per file (item by item on a store
  without batches). Unchanged items are not rewritten.
- **A folder** is read as successive states of one bot: its ``*.json`` files
  (not recursive) are migrated oldest first (by their ``timestamp``, else the
  file's modification time), so the newest file is the state and the older
  ones are its history.
- **Once.** Each migrated file is recorded in the same batch as its items, by
  the SHA-256 of its bytes (key ``migration/<sha256>``, kind
  ``compat.legacy_migration``). Running again with the same content changes nothing
  and reports what the first run did (``already_migrated``); a file whose
  content changed is migrated again.
- **The source is never modified.** With ``backup``, a copy is made beside it
  first: ``state.json.bak``, else ``.bak.1``, ``.bak.2``... never overwriting
  one (an existing backup with the same bytes is reused).
- **A failed item does not stop the others.** Each is in the report with its
  reason; it is not written, and the store keeps its current value for that
  symbol (it is not deleted). A file that cannot be read at all is one failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from statekit.backend import JSON, Record
from statekit.compat.legacy_format import (
    FILE_ITEM,
    Failure,
    LegacyFile,
    read_legacy_file,
)
from statekit.compat.legacy_state import (
    KINDS,
    PAIR_STATES,
    PORTFOLIO,
    PORTFOLIO_KIND,
    POSITIONS,
    Connected,
    LegacyState,
    settings_for,
)
from statekit.compat.portal import Portal
from statekit.config import load_settings
from statekit.errors import SerializationError, StatekitError, ValidationError
from statekit.store import StateStore
from statekit.trading.state import Item, SaveResult, TradingState

__all__ = [
    "MARKER_FOLDER",
    "MARKER_KIND",
    "MigrationReport",
    "StateMigrator",
    "backup_copy",
    "legacy_sources",
    "migrate_legacy_system",
    "migrate_source",
    "validate_migration",
    "validate_source",
]

log = logging.getLogger(__name__)

MARKER_FOLDER = "migration/"
MARKER_KIND = "compat.legacy_migration"
MIGRATED_BY = "statekit migrate"
"""The ``by`` (user_id) of the versions a migration writes."""

Target = Connected | str | None
"""Where to migrate to: a manager, a store URL, or None (the store of the legacy path)."""


@dataclass
class MigrationReport:
    """What a migration did (or, dry run, would do). :meth:`as_dict` is the legacy report.

    ``total_items`` = ``successful_items`` + ``failed_items``; an item is a
    position, a pair state, the portfolio, or a problem outside them (an
    unknown top-level field, a file that cannot be read).
    """

    source: str
    target: str = ""
    dry_run: bool = False
    successful_items: int = 0
    failures: list[Failure] = field(default_factory=list)
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    backup: str | None = None
    already_migrated: bool = False
    files: list[MigrationReport] = field(default_factory=list)

    @property
    def failed_items(self) -> int:
        return len(self.failures)

    @property
    def total_items(self) -> int:
        return self.successful_items + self.failed_items

    @property
    def ok(self) -> bool:
        """Every item migrated (or would)."""
        return not self.failures

    def add(self, part: MigrationReport) -> None:
        """Count a file's report into this folder's report."""
        self.files.append(part)
        self.successful_items += part.successful_items
        self.written += part.written
        self.unchanged += part.unchanged
        self.deleted += part.deleted
        name = Path(part.source).name
        self.failures += [Failure(f"{name}: {f.item}", f.reason) for f in part.failures]

    def as_dict(self) -> dict[str, Any]:
        """``source``, ``target``, ``total_items``, ``successful_items``, ``failed_items``,
        ``failures`` ([{item, reason}]), ``written``, ``unchanged``, ``deleted``,
        ``backup``, ``dry_run``, ``already_migrated``, ``files`` (one such dict per
        file of a folder)."""
        return {
            "source": self.source,
            "target": self.target,
            "total_items": self.total_items,
            "successful_items": self.successful_items,
            "failed_items": self.failed_items,
            "failures": [f.as_dict() for f in self.failures],
            "written": self.written,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "backup": self.backup,
            "dry_run": self.dry_run,
            "already_migrated": self.already_migrated,
            "files": [f.as_dict() for f in self.files],
        }


# -- the async core --------------------------------------------------------------------------


def _state_time(parsed: LegacyFile) -> datetime:
    if parsed.timestamp:
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(parsed.timestamp)
            return at if at.tzinfo else at.replace(tzinfo=UTC)
    with contextlib.suppress(OSError):
        return datetime.fromtimestamp(parsed.path.stat().st_mtime, UTC)
    return datetime.min.replace(tzinfo=UTC)


def legacy_sources(path: str | os.PathLike[str]) -> list[LegacyFile]:
    """The legacy files at ``path``, read: the file, or a folder's ``*.json``, oldest first."""
    place = Path(path)
    if not place.is_dir():
        return [read_legacy_file(place)]
    files = [read_legacy_file(p) for p in place.iterdir() if p.suffix.lower() == ".json"]
    return sorted((f for f in files if f.path.is_file()), key=lambda f: (_state_time(f), f.path))


def backup_copy(path: Path) -> Path:
    """Copy ``path`` to ``<name>.bak`` (else ``.bak.1``, ``.bak.2``...) beside it.

    Never overwrites a file; a backup already holding the same bytes is reused.
    """
    content = path.read_bytes()
    for n in range(10_000):
        candidate = path.with_name(f"{path.name}.bak" + (f".{n}" if n else ""))
        try:
            with candidate.open("xb") as out:  # "x": fails if it exists, even in a race
                out.write(content)
        except FileExistsError:
            with contextlib.suppress(OSError):
                if candidate.read_bytes() == content:
                    return candidate
            continue
        shutil.copystat(path, candidate)
        return candidate
    raise StatekitError(f"{path}: too many backups beside it already")


async def migrate_source(
    legacy: LegacyState,
    path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    backup: bool = False,
    on_file: Callable[[MigrationReport], None] | None = None,
) -> MigrationReport:
    """Migrate the legacy file or folder at ``path`` into ``legacy``'s store.

    Never raises for bad input or a store failure: every problem is a failure
    in the report. See the module docstring for the rules.

    :param dry_run: read and compare only: nothing is written, no backup made.
    :param backup: copy each file beside itself before migrating it.
    :param on_file: called with each file's report as it is done (progress).
    """
    place = Path(path)
    report = MigrationReport(source=os.fspath(place), target=legacy.shown_url, dry_run=dry_run)
    exists, folder, sources = await asyncio.to_thread(_look, place)
    if not exists:
        report.failures.append(Failure(FILE_ITEM, f"{place}: no such file or folder"))
        return report
    if folder and not sources:
        report.failures.append(Failure(FILE_ITEM, f"{place}: no legacy *.json files in it"))
        return report
    for parsed in sources:
        try:
            part = await _migrate_file(legacy, parsed, dry_run=dry_run, backup=backup)
        except StatekitError as exc:
            part = MigrationReport(os.fspath(parsed.path), legacy.shown_url, dry_run)
            part.failures.append(Failure(FILE_ITEM, f"the store failed: {exc}"))
        if on_file is not None:
            on_file(part)
        if not folder:
            return part
        report.add(part)
    return report


def _look(place: Path) -> tuple[bool, bool, list[LegacyFile]]:
    """Whether ``place`` exists, is a folder, and its legacy files, read (blocking I/O)."""
    if not place.exists():
        return False, False, []
    return True, place.is_dir(), legacy_sources(place)


@dataclass
class _Plan:
    """What one legacy file becomes: items per section, and how the report names them."""

    sections: dict[str, dict[str, Item]] = field(default_factory=dict)
    single: dict[str, Item] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # key -> the item's name in the report
    kept: set[str] = field(default_factory=set)  # failed items whose stored value stays


async def _keep(store: StateStore, plan: _Plan, key: str, section: dict[str, Item]) -> None:
    """Leave the stored value of a failed item as it is (the save must not delete it)."""
    head = await store.get(key)
    if head is not None:
        section[key] = Item(head.kind, head.data)
        plan.kept.add(key)


def _from_marker(report: MigrationReport, marker: Record) -> MigrationReport:
    """The report of a file migrated before, from its marker."""
    assert isinstance(marker.data, dict)
    report.already_migrated = True
    items, failures = marker.data.get("items"), marker.data.get("failures")
    report.successful_items = items if isinstance(items, int) else 0
    report.failures = [
        Failure(str(f.get("item")), str(f.get("reason")))
        for f in (failures if isinstance(failures, list) else [])
        if isinstance(f, dict)
    ]
    return report


async def _planned(
    legacy: LegacyState, store: StateStore, parsed: LegacyFile, report: MigrationReport
) -> _Plan:
    plan = _Plan()
    for folder, values, failed in (
        (POSITIONS, parsed.positions, parsed.failed_positions),
        (PAIR_STATES, parsed.pair_states, parsed.failed_pair_states),
    ):
        if values is None:
            continue
        name = "active_positions" if folder == POSITIONS else "pair_states"
        section: dict[str, Item] = {}
        for symbol, data in values.items():
            try:
                key = legacy.key(folder, symbol, name)
            except ValidationError as exc:
                report.failures.append(Failure(f"{name}.{symbol}", str(exc)))
                continue
            section[key] = Item(KINDS[folder], data)
            plan.labels[key] = f"{name}.{symbol}"
        for symbol in failed:
            with contextlib.suppress(ValidationError):
                await _keep(store, plan, legacy.key(folder, symbol, name), section)
        plan.sections[folder] = section
    if parsed.portfolio is not None:
        plan.single[legacy.key(PORTFOLIO)] = Item(PORTFOLIO_KIND, parsed.portfolio)
        plan.labels[legacy.key(PORTFOLIO)] = "portfolio_data"
    return plan


async def _save(
    legacy: LegacyState,
    state: TradingState,
    parsed: LegacyFile,
    plan: _Plan,
    report: MigrationReport,
    marker_key: str,
) -> SaveResult:
    """Save the plan with its marker in one go; an item the store refuses is dropped
    (and reported) and the rest saved again."""
    while True:
        record: dict[str, JSON] = {
            "source": os.fspath(parsed.path.absolute()),
            "sha256": parsed.sha256,
            "timestamp": parsed.timestamp,
            "items": len(plan.labels),
            "failures": [{"item": f.item, "reason": f.reason} for f in report.failures],
        }
        try:
            async with legacy.write_lock():
                return await state.save_items(
                    {**plan.sections, "": {**plan.single, marker_key: Item(MARKER_KIND, record)}},
                    by=MIGRATED_BY,
                    note=f"migrated from {parsed.path.name}",
                )
        except (ValidationError, SerializationError) as exc:
            # One item refused by the store (a validator, the size limit): drop it, try again.
            if exc.key is None or exc.key not in plan.labels:
                raise
            report.failures.append(Failure(plan.labels.pop(exc.key), str(exc)))
            for section in (*plan.sections.values(), plan.single):
                section.pop(exc.key, None)
            for folder, section in plan.sections.items():
                if exc.key.startswith(state.prefix + folder):
                    await _keep(state.store, plan, exc.key, section)


async def _migrate_file(
    legacy: LegacyState, parsed: LegacyFile, *, dry_run: bool, backup: bool
) -> MigrationReport:
    report = MigrationReport(os.fspath(parsed.path), legacy.shown_url, dry_run)
    report.failures += parsed.failures
    if parsed.unreadable:
        return report
    state = await legacy.open()
    marker_key = state.prefix + MARKER_FOLDER + parsed.sha256
    marker = await state.store.get(marker_key)
    if marker is not None and isinstance(marker.data, dict):
        return _from_marker(report, marker)
    plan = await _planned(legacy, state.store, parsed, report)
    if dry_run:
        await _plan(legacy, report, plan.sections, plan.single, len(plan.kept))
        report.successful_items = len(plan.labels)
        return report
    if backup:
        report.backup = os.fspath(await asyncio.to_thread(backup_copy, parsed.path))
    result = await _save(legacy, state, parsed, plan, report, marker_key)
    report.successful_items = len(plan.labels)
    report.written = result.written - 1  # the migration record itself
    report.deleted = result.deleted
    report.unchanged = result.unchanged - len(plan.kept)
    return report


async def _plan(
    legacy: LegacyState,
    report: MigrationReport,
    sections: dict[str, dict[str, Item]],
    single: dict[str, Item],
    kept: int,
) -> None:
    """Dry run: count what a migration would write, leave and delete."""
    store = legacy.state.store
    given = [key for section in (*sections.values(), single) for key in section]
    heads = await store.get_many(given)
    for section in (*sections.values(), single):
        for key, item in section.items():
            head = heads.get(key)
            if head is not None and head.kind == item.kind and head.data == item.data:
                report.unchanged += 1
            else:
                report.written += 1
    report.unchanged -= kept
    for folder, section in sections.items():
        async for record in store.scan(legacy.state.prefix + folder):
            if record.key not in section:
                report.deleted += 1


def _differences(source: JSON, stored: JSON) -> str:
    if isinstance(source, dict) and isinstance(stored, dict):
        fields = sorted(
            k for k in source.keys() | stored.keys() if source.get(k, ...) != stored.get(k, ...)
        )
        return f"differs from the store in {', '.join(fields)}"
    return "differs from the store"


async def validate_source(legacy: LegacyState, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Compare a legacy file, item by item, with the store: ``{"valid", "issues", ...}``.

    For a folder, its newest file (the state a migration leaves). Each issue is
    ``{"item", "reason"}``: the file's own problems, an item missing from the
    store or different there, or a stored item the file does not have.
    """
    place = Path(path)
    issues: list[Failure] = []
    _, _, sources = await asyncio.to_thread(_look, place)
    if not sources:
        issues.append(Failure(FILE_ITEM, f"{place}: no such file, or no *.json files in it"))
        return _validation(issues, place, legacy, 0)
    parsed = sources[-1]
    issues += parsed.failures
    checked = 0
    for folder, name, values, failed in (
        (POSITIONS, "active_positions", parsed.positions, parsed.failed_positions),
        (PAIR_STATES, "pair_states", parsed.pair_states, parsed.failed_pair_states),
    ):
        if values is None:
            continue
        stored = await legacy.section(folder)
        for symbol, data in values.items():
            checked += 1
            if symbol not in stored:
                issues.append(Failure(f"{name}.{symbol}", "not in the store"))
            elif stored[symbol] != data:
                issues.append(Failure(f"{name}.{symbol}", _differences(data, stored[symbol])))
        for symbol in stored:
            if symbol not in values and symbol not in failed:
                issues.append(Failure(f"{name}.{symbol}", "in the store but not in the source"))
    if parsed.portfolio is not None:
        checked += 1
        loaded = await legacy.load()
        stored_portfolio = (loaded or {}).get("portfolio_data")
        if stored_portfolio is None:
            issues.append(Failure("portfolio_data", "not in the store"))
        elif stored_portfolio != parsed.portfolio:
            issues.append(
                Failure("portfolio_data", _differences(parsed.portfolio, stored_portfolio))
            )
    return _validation(issues, parsed.path, legacy, checked)


def _validation(
    issues: list[Failure], source: Path, legacy: LegacyState, checked: int
) -> dict[str, Any]:
    return {
        "valid": not issues,
        "issues": [i.as_dict() for i in issues],
        "source": os.fspath(source),
        "target": legacy.shown_url,
        "checked_items": checked,
    }


# -- the sync API (seed 003's state_migration / unified_state_manager) -------------------------


@contextlib.contextmanager
def _connected(
    path: str | os.PathLike[str], target: Target
) -> Iterator[tuple[Portal, LegacyState]]:
    """The portal and open legacy state to migrate ``path`` through, closed after if ours."""
    if target is not None and not isinstance(target, str):
        yield target._connection()  # a manager: its own portal and store, left open
        return
    settings = load_settings() if target is None else load_settings(url=target)
    legacy = LegacyState(settings_for(path, settings) if target is None else settings)
    with Portal("statekit-migration") as portal:
        try:
            portal.call(legacy.open)
            yield portal, legacy
        finally:
            portal.call(legacy.aclose)


def _log_report(report: MigrationReport) -> None:
    for failure in report.failures:
        log.warning("migration of %s: %s: %s", report.source, failure.item, failure.reason)
    log.info(
        "migration of %s into %s: %d/%d items%s",
        report.source,
        report.target,
        report.successful_items,
        report.total_items,
        " (already migrated)" if report.already_migrated else "",
    )


def _failed(path: str | os.PathLike[str], exc: StatekitError) -> MigrationReport:
    report = MigrationReport(os.fspath(path))
    report.failures.append(Failure(FILE_ITEM, f"cannot migrate: {exc}"))
    return report


class StateMigrator:
    """Migrate one legacy file (or folder) into a target store, with a report.

    :param legacy_path: the legacy JSON file, or a folder of them.
    :param target: a manager (``create_enhanced_trading_state_manager(...)``,
        ``UnifiedStateManager``...), a store URL, or None for the store of the
        legacy path (the configured one, else the SQLite file beside it).
    """

    def __init__(self, legacy_path: str | os.PathLike[str], target: Target = None) -> None:
        self.legacy_path = Path(legacy_path)
        self.target = target
        self._report: MigrationReport | None = None

    def migrate_trading_state(self, backup_original: bool = True, *, dry_run: bool = False) -> bool:
        """Migrate; True when every item migrated. Never raises: failures are in the report.

        :param backup_original: copy the file beside itself first (``<name>.bak``...).
        :param dry_run: only compare; write nothing.
        """
        try:
            with _connected(self.legacy_path, self.target) as (portal, legacy):
                report = portal.call(
                    migrate_source,
                    legacy,
                    self.legacy_path,
                    dry_run=dry_run,
                    backup=backup_original,
                )
        except StatekitError as exc:
            report = _failed(self.legacy_path, exc)
        self._report = report
        _log_report(report)
        return report.ok

    @property
    def report(self) -> MigrationReport | None:
        """The last run's report (None before the first run)."""
        return self._report

    def get_migration_report(self) -> dict[str, Any]:
        """The last run's report as a dict (:meth:`MigrationReport.as_dict`); all zero before."""
        return (self._report or MigrationReport(os.fspath(self.legacy_path))).as_dict()


def migrate_legacy_system(
    path: str | os.PathLike[str], target: Target = None, *, backup: bool = False
) -> bool:
    """Migrate a legacy file or a folder of them; True when every item migrated.

    Never raises: problems are logged (``statekit.compat.migration``) with their
    reasons. For the report, use :class:`StateMigrator`.
    """
    return StateMigrator(path, target).migrate_trading_state(backup_original=backup)


def validate_migration(path: str | os.PathLike[str], target: Target = None) -> dict[str, Any]:
    """Compare a legacy file with the target store item by item (:func:`validate_source`).

    ``{"valid": bool, "issues": [{"item", "reason"}], "source", "target",
    "checked_items"}``. Never raises: a store that cannot be reached is an issue.
    """
    try:
        with _connected(path, target) as (portal, legacy):
            return portal.call(validate_source, legacy, path)
    except StatekitError as exc:
        return {
            "valid": False,
            "issues": [{"item": "(store)", "reason": str(exc)}],
            "source": os.fspath(path),
            "target": "",
            "checked_items": 0,
        }
