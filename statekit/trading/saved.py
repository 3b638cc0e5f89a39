"""What a :class:`~statekit.trading.TradingState` last saved: the heads its next save plans from.

A whole-state ``save()`` hands over every item, but usually only a few changed.
Reading every stored head to find them costs a read per item (a scan of the
folders); :class:`SavedHeads` instead remembers, after each successful save, the
version, kind and value of every live key of the folders saved, and the version
and key list of the index. The next save compares against that and writes only
what differs, each write still checked against the version remembered
(compare-and-set), the index included.

**Why that is safe.** Every write expects the version remembered for its key,
and the index, which lists the keys, is either written with ``expect=<its
version>`` (the save adds or removes a key) or, when the keys stay the same,
*guarded* at that version (``Guard``: checked in the same atomic append, not
written), on stores declaring ``Capability.GUARDED_APPEND``. A save that adds
or removes a key (another task, process or machine) moves the index, so a plan
made from stale heads fails as a whole with ConflictError: nothing is written,
the heads are forgotten, and the save reads the store and plans again, as it
always did. A write by anyone to one of the changed items fails the same way.
What the remembered heads cannot see is a write by someone else to an item
this save leaves unchanged (``store.put``, the REST API, another saver's save
of the same keys): that write is kept, neither overwritten nor reverted. So
two savers changing different items of the same keys both keep their changes;
when they change the same item, or the keys, the later one re-reads and saves
its whole state. Writes through this same ``TradingState`` object
(``Section.save``, ``save_portfolio``...) forget the heads, so the next save
reads again.

**The index's history** therefore grows only when keys come or go: each
version lists the keys after a save that added or removed some.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from statekit.backend import JSON, Record, dumps

__all__ = ["Head", "Item", "Planned", "SavedHeads"]


@dataclass(frozen=True, slots=True)
class Item:
    """A value to store under a key: its kind and its JSON data (None: delete it)."""

    kind: str
    data: JSON


@dataclass(frozen=True, slots=True)
class Head(Item):
    """The kind, value and version of a live key, as last saved or read.

    It is an :class:`Item` too: an unchanged item is handed to the next save as its head.
    """

    version: int


@dataclass(slots=True)
class SavedHeads:
    """The live keys of some folders and single keys, and the index, as of one index version.

    :param folders: key prefixes (``position/`` with the state's prefix) whose live
        keys are all in :attr:`members`.
    :param singles: single keys known: in :attr:`heads` when live.
    :param index_version: the index's head version (0: never written).
    :param listed: the keys the index lists (or, read from the store, should list), sorted.
    :param index_current: the stored index lists exactly :attr:`listed` (False when one
        read from the store missed keys: the next save writes it even if no key came or went).
    """

    folders: set[str]
    singles: set[str]
    index_version: int
    listed: list[str]
    index_current: bool = True
    changes: int = 0
    """Bumped by every :meth:`applied`: a :class:`Planned` made before is stale."""
    heads: dict[str, Head] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    listed_set: set[str] = field(default_factory=set)

    @classmethod
    def read(
        cls,
        records: Iterable[Record],
        folders: Iterable[str],
        singles: Iterable[str],
        index: Record | None,
    ) -> SavedHeads:
        """The heads as read from the store: live ``records`` of ``folders`` and ``singles``."""
        saved = cls(set(folders), set(singles), 0 if index is None else index.version, [])
        saved.members = {folder: set() for folder in saved.folders}
        for record in records:
            saved.heads[record.key] = Head(record.kind, record.data, record.version)
            folder = saved.folder_of(record.key)
            if folder is not None:
                saved.members[folder].add(record.key)
        listed = index.data.get("keys") if index and isinstance(index.data, dict) else None
        before = {k for k in listed if isinstance(k, str)} if isinstance(listed, list) else set()
        # The next index lists the keys live now even when an earlier one missed some.
        saved.listed_set = before | set(saved.heads)
        saved.listed = sorted(saved.listed_set)
        saved.index_current = before == saved.listed_set
        return saved

    def folder_of(self, key: str) -> str | None:
        for folder in self.folders:
            if key.startswith(folder):
                return folder
        return None

    def covers(self, folders: Iterable[str], singles: Iterable[str]) -> bool:
        """Every folder and single key a save names is known."""
        return all(f in self.folders for f in folders) and all(k in self.singles for k in singles)

    def applied(self, records: list[Record], listed: list[str], index: Record | None) -> SavedHeads:
        """These heads once ``records`` committed (the items; ``index``, the index's new
        version among them, or None when the save only guarded it); updated in place."""
        self.changes += 1
        for record in records:
            if record is index:
                continue
            folder = self.folder_of(record.key)
            if record.deleted:
                self.heads.pop(record.key, None)
                if folder is not None:
                    self.members[folder].discard(record.key)
            else:
                self.heads[record.key] = Head(record.kind, _private(record.data), record.version)
                if folder is not None:
                    self.members[folder].add(record.key)
        if index is not None:
            self.index_version, self.index_current = index.version, True
        if listed is not self.listed:
            self.listed, self.listed_set = listed, set(listed)
        return self


class Planned(dict[str, Item]):
    """The items of one folder, by key, as built against one :class:`SavedHeads`: every
    item is that key's head there except those under :attr:`others`.

    A save of a large book changes a few items; the plan then looks only at the
    others, as long as the heads did not move since (:meth:`trusted`).
    """

    __slots__ = ("changes", "others", "saved")

    def __init__(self, saved: SavedHeads | None) -> None:
        super().__init__()
        self.saved = saved
        self.changes = saved.changes if saved is not None else -1
        self.others: list[str] = []
        """Keys whose item is not their head (new, changed, or not compared)."""

    def trusted(self, saved: SavedHeads) -> bool:
        """Built against ``saved`` as it still is: every key not in :attr:`others` is unchanged."""
        return self.saved is saved and self.changes == saved.changes


def _private(data: JSON) -> JSON:
    """A copy of ``data`` that nobody else holds: a save returns its records, whose
    values the caller may change; the heads must keep what was stored."""
    if isinstance(data, dict) and not any(isinstance(v, dict | list) for v in data.values()):
        return dict(data)  # flat: a shallow copy is a whole copy
    return json.loads(dumps(data))  # type: ignore[no-any-return]
