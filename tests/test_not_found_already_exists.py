"""Seed 001's users catch "already exists" and "not found" by type: statekit's
:class:`~statekit.AlreadyExists` and :class:`~statekit.NotFound`, inside the one error
hierarchy, raised by IntentStore and snapshots, compatible with what was raised before
(ConflictError, ValidationError, KeyError), and answered 409 / 404 by the API."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

import statekit
from statekit import AlreadyExists, ConflictError, NotFound, StatekitError, ValidationError
from statekit.api import create_app
from statekit.config import load_settings
from statekit.store import StateStore
from statekit.trading.models import OrderSide
from statekit.trading.reconcile import IntentSpec, IntentStore


def buy(price: str = "90", **kwargs: object) -> IntentSpec:
    return IntentSpec(
        symbol="BTC/USDT",
        side=OrderSide.BUY,
        amount=Decimal(1),
        price=Decimal(price),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture
async def store() -> AsyncIterator[StateStore]:
    async with await statekit.open("memory://") as opened:
        yield opened


@pytest.mark.asyncio
async def test_a_duplicate_intent_raises_already_exists(store: StateStore) -> None:
    intents = IntentStore(store)
    await intents.create("i1", buy())
    with pytest.raises(AlreadyExists) as caught:
        await intents.create("i1", buy(price="80"))
    err = caught.value
    assert isinstance(err, ConflictError) and isinstance(err, StatekitError)
    assert (err.key, err.expected, err.actual, err.what) == ("intent/i1", 0, 1, "intent")
    assert str(err) == "intent 'i1' exists already; update() changes it"
    current = await intents.get("i1")
    assert current is not None and current.spec == buy()  # nothing changed


@pytest.mark.asyncio
async def test_a_missing_intent_raises_not_found(store: StateStore) -> None:
    intents = IntentStore(store)
    for call in (intents.update("nope", price=Decimal(1)), intents.delete("nope")):
        with pytest.raises(NotFound) as caught:
            await call
        err = caught.value
        assert isinstance(err, ValidationError) and isinstance(err, KeyError)
        assert (err.key, err.what, err.reason) == ("intent/nope", "intent", "not found")
        assert str(err) == "no intent 'nope'"  # not KeyError's quoted form
    assert await intents.get("nope") is None  # get() answers None, it does not raise
    assert await intents.all() == []


@pytest.mark.asyncio
async def test_seed_001_style_handlers_catch_them(store: StateStore) -> None:
    intents = IntentStore(store)
    await intents.create("i1", buy())
    with pytest.raises(ConflictError):  # what statekit raised before: still caught
        await intents.create("i1", buy())
    with pytest.raises(KeyError):  # what seed 001's in-memory store raised
        await intents.update("gone", price=Decimal(2))
    with pytest.raises(ValidationError):  # what statekit raised before for a missing intent
        await intents.delete("gone")


@pytest.mark.asyncio
async def test_snapshots_raise_them_too(store: StateStore) -> None:
    await store.put("k", 1)
    await store.snapshots.create(snapshot_id="s1")
    with pytest.raises(AlreadyExists, match="snapshot 's1' exists already") as exists:
        await store.snapshots.create(snapshot_id="s1")
    assert exists.value.what == "snapshot"
    with pytest.raises(NotFound, match="no snapshot 'ghost'") as missing:
        await store.snapshots.restore("ghost")
    assert (missing.value.what, missing.value.reason) == ("snapshot", "unknown snapshot")


def test_they_survive_a_process_boundary() -> None:
    for err in (
        NotFound("no intent 'x'", key="intent/x", what="intent"),
        AlreadyExists("intent/x", 3, what="intent", message="intent 'x' exists already"),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert (type(back), str(back), back.key, back.what) == (
            type(err),
            str(err),
            err.key,
            err.what,
        )


@pytest.mark.asyncio
async def test_the_api_answers_404_and_409(store: StateStore, tmp_path: Path) -> None:
    app = create_app(store, load_settings("", "", url="memory://"))

    @app.get("/raise/{what}")
    async def raising(what: str) -> None:
        if what == "missing":
            await IntentStore(store).update("nope", price=Decimal(1))
        await IntentStore(store).create("i1", buy())
        await IntentStore(store).create("i1", buy())

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        missing = await client.get("/raise/missing")
        assert missing.status_code == 404, missing.text
        assert missing.json() == {
            "error": {"code": "not_found", "message": "no intent 'nope'", "key": "intent/nope"}
        }
        exists = await client.get("/raise/twice")
        assert exists.status_code == 409, exists.text
        assert exists.json()["error"] == {
            "code": "conflict",
            "message": "intent 'i1' exists already; update() changes it",
            "key": "intent/i1",
            "expected": 0,
            "actual": 1,
        }
