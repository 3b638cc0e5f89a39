"""Bad input: the part of the conformance suite that every backend passes the same way.

:class:`BadInputContract` is a mixin of :class:`statekit.testing.BackendContract`, so
a backend author gets it with the rest of the suite. Its tests feed the store the
inputs a bad-input campaign found (keys, kinds, values, meta, versions and bounds
that no database could hold, or that make no sense) and assert two things for each:

- the call raises the statekit error named here (never a driver's exception, never
  Python's ``UnicodeEncodeError``/``OverflowError``/``ValueError``/``RecursionError``),
  with the field that says what is wrong (``reason``, ``path``);
- nothing stored changed: every live key, its version, value and meta, and the
  history of the key written before, are what they were.

The core refuses these inputs before a backend sees them, so every backend,
``memory://`` included, refuses them the same way; the valid edges next to them
(a 4,300-digit integer, 200 levels of nesting, a version of 2**63 - 2) reach the
backend and must be stored, or compared, exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from statekit.backend import JSON, Capability, Write
from statekit.codec import MAX_DEPTH, MAX_INT_DIGITS, MAX_KEY_LENGTH, MAX_KIND_LENGTH, MAX_VERSION
from statekit.errors import (
    CapabilityError,
    ConflictError,
    SerializationError,
    StatekitError,
    ValidationError,
)
from statekit.store import StateStore

__all__ = [
    "BAD_BOUNDS",
    "BAD_KEYS",
    "BAD_KINDS",
    "BAD_META",
    "BAD_VALUES",
    "BadInputContract",
    "nested",
]


def nested(depth: int) -> JSON:
    """A list holding a list ... ``depth`` levels deep around ``0``."""
    value: JSON = 0
    for _ in range(depth):
        value = [value]
    return value


BAD_KEYS: tuple[tuple[str, Any], ...] = (
    ("empty", ""),
    ("too long", "k" * (MAX_KEY_LENGTH + 1)),
    ("NUL", "a\x00b"),
    ("newline", "a\nb"),
    ("DEL", "\x7f"),
    ("C1 control", "a\x85"),
    ("lone high surrogate", "k\ud800"),
    ("lone low surrogate", "\udfff"),
    ("int", 1),
    ("None", None),
    ("bytes", b"k"),
)
"""(what, key): keys every store refuses with ValidationError."""

BAD_KINDS: tuple[tuple[str, Any], ...] = (
    ("empty", ""),
    ("too long", "k" * (MAX_KIND_LENGTH + 1)),
    ("NUL", "a\x00"),
    ("lone surrogate", "a\ud800"),
    ("int", 1),
    ("None", None),
)
"""(what, kind): kinds every store refuses with ValidationError."""

BAD_VALUES: tuple[tuple[str, Any, str], ...] = (
    ("surrogate in a string", {"s": "\ud800"}, "$.s"),
    ("surrogate in an object key", {"ok": 1, "\udc00": 1}, "$.\\udc00"),
    ("surrogate deep inside", {"list": ["ok", {"deep": "x\udfffy"}]}, "$.list[1].deep"),
    ("surrogate as the value", "\ud83d", "$"),
    ("NaN", {"n": float("nan")}, "$.n"),
    ("infinity", {"n": float("inf")}, "$.n"),
    ("minus infinity", [1, float("-inf")], "$[1]"),
    (f"int of {MAX_INT_DIGITS + 1} digits", {"n": 10**MAX_INT_DIGITS}, "$.n"),
    (f"negative int of {MAX_INT_DIGITS + 1} digits", [-(10**MAX_INT_DIGITS)], "$[0]"),
    (f"nested {MAX_DEPTH + 1} deep", nested(MAX_DEPTH + 1), "$" + "[0]" * (MAX_DEPTH + 1)),
    ("set", {"s": {1, 2}}, "$.s"),
    ("bytes", {"b": b"x"}, "$.b"),
    ("Decimal", {"d": Decimal("1.5")}, "$.d"),
    ("datetime", {"t": datetime(2026, 1, 1, tzinfo=UTC)}, "$.t"),
    ("object", {"o": object()}, "$.o"),
    ("int object key", {1: "x"}, "$"),
)
"""(what, value, path): values every store refuses with SerializationError at ``path``."""

BAD_META: tuple[tuple[str, Any, type[StatekitError]], ...] = (
    ("surrogate in a value", {"note": "\ud800"}, SerializationError),
    ("surrogate in a key", {"\ud800": "x"}, SerializationError),
    ("NaN", {"n": float("nan")}, SerializationError),
    (f"int of {MAX_INT_DIGITS + 1} digits", {"n": 10**MAX_INT_DIGITS}, SerializationError),
    ("not a mapping", "note", ValidationError),
    ("a list", [("note", "x")], ValidationError),
)
"""(what, meta, error): meta every store refuses."""

BAD_BOUNDS: tuple[tuple[str, Any], ...] = (
    ("2**63", 2**63),
    ("2**64", 2**64),
    ("-2**63 - 1", -(2**63) - 1),
    ("-1", -1),
    ("True", True),
    ("False", False),
    ("1.0", 1.0),
    ("'1'", "1"),
    ("a 5000-digit int", 10**5000),
)
"""(what, number): integers every store refuses as ``expect``/``after``/``before``/``limit``."""

SEED_KEY = "input/seed"


async def _stored(store: StateStore) -> dict[str, tuple[int, str, JSON, dict[str, JSON]]]:
    """Every live key -> (version, kind, data, meta), and the seed key's versions."""
    found = {r.key: (r.version, r.kind, r.data, dict(r.meta)) async for r in store.scan()}
    if Capability.HISTORY in store.capabilities:
        for record in await store.history(SEED_KEY, limit=1000):
            found[f"{SEED_KEY}@{record.version}"] = (
                record.version,
                record.kind,
                record.data,
                dict(record.meta),
            )
    return found


class BadInputContract:
    """Bad input is refused with a statekit error, and nothing stored changes.

    Needs the ``store`` fixture of :class:`statekit.testing.BackendContract` (an empty
    store over the backend under test), which is what it is mixed into.
    """

    @staticmethod
    async def _refused(
        store: StateStore,
        calls: Mapping[str, Callable[[], Awaitable[object]]],
        error: type[StatekitError],
        fresh: tuple[str, ...] = (),
        **fields: object,
    ) -> None:
        """Each call raises ``error`` (with ``fields``), and nothing stored changes.

        :param fresh: keys the calls tried to write that must still have no version.
        """
        await store.put(SEED_KEY, {"v": 1}, kind="seed", meta={"note": "seed"})
        before = await _stored(store)
        for what, call in calls.items():
            with pytest.raises(error) as caught:
                await call()
            for name, value in fields.items():
                assert getattr(caught.value, name) == value, (what, name, caught.value)
        assert await _stored(store) == before, "a refused call changed what is stored"
        if fresh:
            heads = await store.backend.latest(list(fresh))
            assert heads == {}, f"a refused write stored a version: {heads}"

    # -- keys and kinds ------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_bad_keys_are_refused_by_every_call(self, store: StateStore) -> None:
        has_history = Capability.HISTORY in store.capabilities
        for what, key in BAD_KEYS:
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                f"put {what}": partial(store.put, key, {"v": 1}),
                f"batch {what}": partial(store.batch, [Write(key, 1)]),
                f"delete {what}": partial(store.delete, key),
                f"get {what}": partial(store.get, key),
                f"get_many {what}": partial(store.get_many, [SEED_KEY, key]),
            }
            if has_history:
                calls[f"history {what}"] = partial(store.history, key)
            await self._refused(store, calls, ValidationError)

    @pytest.mark.asyncio
    async def test_reserved_keys_are_refused(self, store: StateStore) -> None:
        await self._refused(
            store,
            {"put _sk/": lambda: store.put("_sk/mine", 1)},
            ValidationError,
            fresh=("_sk/mine",),
            reason="reserved",
        )

    @pytest.mark.asyncio
    async def test_bad_kinds_are_refused(self, store: StateStore) -> None:
        calls: dict[str, Callable[[], Awaitable[object]]] = {}
        for what, kind in BAD_KINDS:
            calls[f"put kind {what}"] = partial(store.put, "input/kind", 1, kind=kind)
            calls[f"put {what} on the seed"] = partial(store.put, SEED_KEY, 2, kind=kind)
        await self._refused(store, calls, ValidationError, fresh=("input/kind",), reason="kind")

    @pytest.mark.asyncio
    async def test_bad_scan_and_watch_prefixes_are_refused(self, store: StateStore) -> None:
        async def scan(prefix: Any = "", kind: Any = None) -> list[object]:
            return [r async for r in store.scan(prefix, kind)]

        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "scan NUL prefix": lambda: scan("a\x00"),
            "scan surrogate prefix": lambda: scan("a\ud800"),
            "scan int prefix": lambda: scan(1),
            "scan too long prefix": lambda: scan("p" * (MAX_KEY_LENGTH + 1)),
            "scan surrogate kind": lambda: scan("", "a\ud800"),
            "scan empty kind": lambda: scan("", ""),
        }
        if Capability.WATCH in store.capabilities:

            async def watch(prefix: str) -> None:
                async with store.watch(prefix):
                    pass

            calls["watch surrogate prefix"] = lambda: watch("w\udfff")
            calls["watch control prefix"] = lambda: watch("w\x1b")
        await self._refused(store, calls, ValidationError)

    # -- values and meta -----------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_bad_values_are_refused_naming_the_path(self, store: StateStore) -> None:
        await store.put(SEED_KEY, {"v": 1}, kind="seed", meta={"note": "seed"})
        before = await _stored(store)
        for what, value, path in BAD_VALUES:
            for key in ("input/value", SEED_KEY):
                with pytest.raises(SerializationError) as caught:
                    await store.put(key, value)
                assert (caught.value.key, caught.value.path) == (key, path), (what, caught.value)
                str(caught.value).encode()  # the message can be printed and sent as UTF-8
        assert await _stored(store) == before, "a refused value changed what is stored"
        assert await store.backend.latest(["input/value"]) == {}

    @pytest.mark.asyncio
    async def test_bad_meta_is_refused(self, store: StateStore) -> None:
        for error in (SerializationError, ValidationError):
            calls: dict[str, Callable[[], Awaitable[object]]] = {}
            for what, meta, expected in BAD_META:
                if expected is not error:
                    continue
                for key in ("input/meta", SEED_KEY):
                    calls[f"put {key} meta {what}"] = partial(store.put, key, {"v": 2}, meta=meta)
                    calls[f"delete {key} meta {what}"] = partial(store.delete, key, meta=meta)
            await self._refused(store, calls, error, fresh=("input/meta",))

    @pytest.mark.asyncio
    async def test_one_bad_write_fails_its_whole_batch(self, store: StateStore) -> None:
        batches: dict[str, Callable[[], Awaitable[object]]] = {
            "bad value last": lambda: store.batch(
                [Write("input/good", 1), Write("input/bad", {"s": "\ud800"})]
            ),
            "bad value first": lambda: store.batch(
                [Write("input/bad", 10**MAX_INT_DIGITS), Write("input/good", 1)]
            ),
            "bad meta": lambda: store.batch(
                [Write("input/good", 1), Write("input/bad", 1, meta={"n": float("nan")})]
            ),
        }
        await self._refused(store, batches, SerializationError, fresh=("input/good", "input/bad"))

    @pytest.mark.asyncio
    async def test_update_refuses_a_bad_new_value(self, store: StateStore) -> None:
        if Capability.COMPARE_AND_SET not in store.capabilities:
            pytest.skip(f"{store.backend.name} has no compare_and_set, so no update()")
        await self._refused(
            store,
            {
                "surrogate": lambda: store.update(SEED_KEY, lambda _: {"v": "\udead"}),
                "huge int": lambda: store.update(SEED_KEY, lambda _: {"v": 10**5000}),
                "deep": lambda: store.update("input/upd", lambda _: nested(10_000)),
            },
            SerializationError,
            fresh=("input/upd",),
        )

    @pytest.mark.asyncio
    async def test_values_at_the_limits_are_stored_exactly(self, store: StateStore) -> None:
        """The valid edges next to the refused values reach the backend and read back equal."""
        largest = 10**MAX_INT_DIGITS - 1
        value: JSON = {
            "int": largest,
            "neg": -largest,
            "deep": nested(MAX_DEPTH - 1),  # one level is the object around it
            "text": "\U0010ffff\ue000\ud7ff\u2028",
            "surrogate pair written out": "😀",
        }
        record = await store.put("input/edges", value, meta={"m": nested(MAX_DEPTH - 1)})
        got = await store.get("input/edges")
        assert got is not None and got == record
        assert got.data == value and got.meta == {"m": nested(MAX_DEPTH - 1)}

    # -- versions and bounds -------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_bad_expect_is_refused(self, store: StateStore) -> None:
        calls: dict[str, Callable[[], Awaitable[object]]] = {}
        bad = (*BAD_BOUNDS, ("2**63 - 1 (its next version does not fit)", MAX_VERSION))
        for what, number in bad:
            calls[f"put expect={what}"] = partial(store.put, SEED_KEY, 2, expect=number)
            calls[f"put new expect={what}"] = partial(store.put, "input/x", 2, expect=number)
            calls[f"delete expect={what}"] = partial(store.delete, SEED_KEY, expect=number)
            calls[f"batch expect={what}"] = partial(
                store.batch, [Write("input/x", 1, expect=number)]
            )
        await self._refused(store, calls, ValidationError, fresh=("input/x",), reason="expect")

    @pytest.mark.asyncio
    async def test_the_largest_expect_reaches_the_backend(self, store: StateStore) -> None:
        """``expect=2**63 - 2`` is valid: a conflict (or, without CAS, CapabilityError)."""
        largest = MAX_VERSION - 1
        error = (
            ConflictError if Capability.COMPARE_AND_SET in store.capabilities else CapabilityError
        )
        await self._refused(
            store,
            {
                "existing key": lambda: store.put(SEED_KEY, 2, expect=largest),
                "new key": lambda: store.put("input/x", 2, expect=largest),
            },
            error,
            fresh=("input/x",),
        )

    @pytest.mark.asyncio
    async def test_bad_history_bounds_are_refused(self, store: StateStore) -> None:
        if Capability.HISTORY not in store.capabilities:
            pytest.skip(f"{store.backend.name} keeps no history")
        for name, extra in (("limit", ("0", 0)), ("after", None), ("before", ("0", 0))):
            bad = BAD_BOUNDS + ((extra,) if extra else ())
            calls = {
                f"history {name}={what}": partial(store.history, SEED_KEY, **{name: number})
                for what, number in bad
            }
            await self._refused(store, calls, ValidationError, reason=name)

    @pytest.mark.asyncio
    async def test_the_largest_bounds_reach_the_backend(self, store: StateStore) -> None:
        if Capability.HISTORY not in store.capabilities:
            pytest.skip(f"{store.backend.name} keeps no history")
        await store.put(SEED_KEY, 1)
        await store.put(SEED_KEY, 2)
        assert await store.history(SEED_KEY, after=MAX_VERSION) == []
        newest = await store.history(SEED_KEY, before=MAX_VERSION, limit=MAX_VERSION)
        assert [r.version for r in newest] == [2, 1]
        oldest = await store.history(
            SEED_KEY, before=MAX_VERSION, limit=MAX_VERSION, newest_first=False
        )
        assert [r.version for r in oldest] == [1, 2]
        assert [r.version for r in await store.history(SEED_KEY, before=1)] == []
