"""The last legacy load, kept in this process while no legacy key changed since.

A legacy bot loads its whole state often and changes it rarely; reading and
decoding one row per item each time costs far more than the ``json.load`` of
the file it replaced. :class:`LoadedState` keeps what one load built, stamped
with ``store.position()`` taken **before** that load's reads. A later load asks
``store.changed(stamp, prefix)`` (one indexed query, in proportion to what was
committed since, on backends declaring ``Capability.CHANGES``) and hands out a
copy of the kept state when none of the legacy keys is listed; else it reads the
store again. A write by anyone (another process, another object, a single
``store.put``) after the stamp is listed, so it is seen by the next load; a write
that committed before the stamp was seen by the reads. ``changed()`` may list
more keys than changed, never fewer: a superset only costs a read.

Callers may change what ``load`` returns: each load hands out fresh dicts
(:meth:`LoadedState.copy`), never the kept ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from statekit.backend import JSON, dumps

__all__ = ["LoadedState"]

_SECTIONS = ("active_positions", "pair_states")


def _flat(value: object) -> bool:
    """A dict holding no dict or list: ``dict(value)`` copies it whole."""
    return type(value) is dict and not any(isinstance(v, dict | list) for v in value.values())


@dataclass(frozen=True, slots=True)
class LoadedState:
    """A legacy load as built, and the store position taken before its reads.

    :param stamp: ``store.position()`` taken before the reads.
    :param loaded: the load's dict (None: nothing saved); never handed out.
    :param flat: every item of both sections is a flat dict (copied with ``dict()``).
    :param text: the JSON text of ``loaded`` when it is not flat (copied by parsing it).
    :param noisy: the last check listed keys, none of them legacy ones: the next check
        takes a new position first, to move the stamp past them.
    """

    stamp: str
    loaded: dict[str, Any] | None
    flat: bool
    text: str | None
    noisy: bool = False

    @classmethod
    def of(cls, stamp: str, loaded: dict[str, Any] | None) -> LoadedState:
        """Keep ``loaded`` (the caller hands it over and must not change it afterwards)."""
        if loaded is None:
            return cls(stamp, None, True, None)
        flat = all(_flat(v) for s in _SECTIONS for v in loaded[s].values())
        return cls(stamp, loaded, flat, None if flat else dumps(loaded))

    def copy(self) -> dict[str, Any] | None:
        """A copy of the kept load that shares no dict or list with it."""
        loaded = self.loaded
        if loaded is None:
            return None
        if self.text is not None:
            return json.loads(self.text)  # type: ignore[no-any-return]
        copied = dict(loaded)
        for section in _SECTIONS:
            copied[section] = {k: dict(v) for k, v in loaded[section].items()}
        if "portfolio_data" in loaded:
            portfolio: JSON = loaded["portfolio_data"]
            copied["portfolio_data"] = json.loads(dumps(portfolio))
        return copied

    def moved(self, stamp: str | None, listed: bool) -> LoadedState:
        """The same load, valid from ``stamp`` on (when given): a check listed no legacy key."""
        if stamp is not None:
            return LoadedState(stamp, self.loaded, self.flat, self.text, noisy=listed)
        return (
            self
            if self.noisy == listed
            else LoadedState(self.stamp, self.loaded, self.flat, self.text, noisy=listed)
        )


def touches(keys: Iterable[str], starts: tuple[str, ...], singles: frozenset[str]) -> bool:
    """Any of ``keys`` starts with one of ``starts`` or is one of ``singles``."""
    return any(k.startswith(starts) or k in singles for k in keys)
