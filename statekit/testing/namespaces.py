"""Namespaces: two namespaces of one store never see, nor change, each other's data.

Many bots share one server, each in a namespace of its own (``?namespace=bot-017``,
docs/scaling.md). Each backend keeps namespaces apart its own way (a key prefix and
hash tag on Redis, a column on PostgreSQL, a field on MongoDB), so each is held to it
here: the same key written in both namespaces, read back through ``get``, ``scan``,
``history``, ``as_of``, ``changed`` and ``watch``; then history pruned in one and the
other namespace dropped, each leaving the other as it was.

A backend whose URL names its namespace with the ``namespace`` option gets a sibling
namespace by itself; one that spells it otherwise overrides :meth:`sibling_url`. A
backend without namespaces in its URL (SQLite: a namespace is a file) skips these
tests as a capability.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_asyncio

from statekit.backend import JSON, Capability, Record
from statekit.errors import CapabilityError
from statekit.kit import with_options
from statekit.store import Retention, StateStore
from statekit.testing._capabilities import needs
from statekit.testing.servers import fresh_namespace

__all__ = ["NamespaceContract"]

KEY = "ns/shared-name"
"""A key both namespaces write: the same name must hold two independent values."""
WATCH_PATIENCE = 30.0
"""Seconds a watch may take to deliver a commit (a hang guard, not a speed bound)."""


async def _view(store: StateStore) -> tuple[list[tuple[str, JSON]], list[JSON]]:
    """What a namespace shows: its keys with their values, and KEY's history."""
    keys = [(r.key, r.data) async for r in store.scan("ns/")]
    history = (
        [r.data for r in await store.history(KEY, limit=100, newest_first=False)]
        if Capability.HISTORY in store.capabilities
        else []
    )
    return keys, history


class NamespaceContract:
    """Two namespaces of one store: isolation of reads, watches, prune and drop."""

    @pytest.fixture
    def sibling_url(self, backend_url: str | None) -> str | None:
        """The same store in another, fresh namespace (None: the backend's URL names no
        ``namespace``; override this fixture for another spelling)."""
        if backend_url is None:
            return None
        if "namespace" not in dict(parse_qsl(urlsplit(backend_url).query)):
            return None
        return with_options(backend_url, namespace=fresh_namespace("sib"))

    @pytest_asyncio.fixture
    async def sibling(
        self, store: StateStore, sibling_url: str | None
    ) -> AsyncIterator[StateStore]:
        """A store on the sibling namespace, dropped afterwards where the backend can."""
        if sibling_url is None:
            pytest.skip(f"{store.backend.name}: no namespace option in its URL (a capability)")
        import statekit

        other = await statekit.open(sibling_url)
        try:
            yield other
        finally:
            with contextlib.suppress(CapabilityError):
                await other.backend.drop_namespace(forget=True)
            await other.aclose()

    @pytest.mark.asyncio
    async def test_namespaces_never_see_each_others_keys(
        self, store: StateStore, sibling: StateStore
    ) -> None:
        mine_since = await store.position() if Capability.CHANGES in store.capabilities else ""
        theirs_since = (
            await sibling.position() if Capability.CHANGES in sibling.capabilities else ""
        )
        for n in range(3):
            await store.put(KEY, {"here": n})
        await store.put("ns/only-here", 1)
        await sibling.put(KEY, {"there": 0})
        await sibling.put("ns/only-there", 2)
        assert await _view(store) == (
            sorted([(KEY, {"here": 2}), ("ns/only-here", 1)]),
            [{"here": 0}, {"here": 1}, {"here": 2}]
            if Capability.HISTORY in store.capabilities
            else [],
        ), "a namespace shows a key or version of another"
        assert await _view(sibling) == (
            sorted([(KEY, {"there": 0}), ("ns/only-there", 2)]),
            [{"there": 0}] if Capability.HISTORY in sibling.capabilities else [],
        ), "a namespace shows a key or version of another"
        assert await sibling.get("ns/only-here") is None
        if Capability.HISTORY in store.capabilities:
            now = datetime.now(UTC)
            here, there = await store.get(KEY, as_of=now), await sibling.get(KEY, as_of=now)
            assert here is not None and here.data == {"here": 2}
            assert there is not None and there.data == {"there": 0}
        assert (await sibling.get_many([KEY, "ns/only-here"])).keys() <= {KEY}
        if Capability.CHANGES in store.capabilities:
            assert await store.changed(mine_since, "ns/") == sorted([KEY, "ns/only-here"])
            assert await sibling.changed(theirs_since, "ns/") == sorted([KEY, "ns/only-there"])

    @pytest.mark.asyncio
    async def test_a_watch_sees_only_its_own_namespace(
        self, store: StateStore, sibling: StateStore
    ) -> None:
        needs(store, Capability.WATCH)
        seen: list[Record] = []
        async with sibling.watch("ns/") as changes:
            await store.put(KEY, {"here": 1})  # must not reach the sibling's watch
            await store.put("ns/w", 1)
            await sibling.put("ns/marker", "there")
            async with asyncio.timeout(WATCH_PATIENCE):
                async for record in changes:
                    seen.append(record)
                    if record.key == "ns/marker":
                        break
        assert [(r.key, r.data) for r in seen] == [("ns/marker", "there")], (
            "a watch delivered another namespace's commits"
        )

    @pytest.mark.asyncio
    async def test_pruning_or_dropping_one_namespace_leaves_the_other(
        self, store: StateStore, sibling: StateStore
    ) -> None:
        needs(store, Capability.HISTORY)
        for n in range(3):
            await store.put(KEY, {"here": n})
            await sibling.put(KEY, {"there": n})
        await sibling.put("ns/only-there", 1)
        theirs = await _view(sibling)
        assert await store.prune(KEY, Retention(keep_last=1)) == 2
        assert await _view(sibling) == theirs, "pruning one namespace changed another"
        mine = await _view(store)
        try:
            await sibling.backend.drop_namespace(forget=True)
        except CapabilityError:
            return  # the backend cannot drop a namespace: nothing more to check
        assert await _view(store) == mine, "dropping one namespace changed another"
        assert await _view(sibling) == ([], []), "a dropped namespace kept data"
