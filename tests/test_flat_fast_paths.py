"""The flat-value fast paths convert and refuse exactly as the full walk does."""

from __future__ import annotations

import math
from enum import IntEnum, StrEnum
from typing import Any

import pytest

from statekit.codec import Codec
from statekit.compat.legacy_format import legacy_object, legacy_value
from statekit.errors import ValidationError


class Side(StrEnum):
    LONG = "long"


class Level(IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    "item",
    [
        {"symbol": "EURUSD", "qty": 100000, "price": 1.0845, "open": True, "note": None},
        {"side": Side.LONG, "level": Level.ONE},  # subclasses: the full walk converts them
        {1: "a", None: "b"},  # keys json.dump turns into text
        {"when": (1, 2)},
    ],
)
def test_legacy_object_is_legacy_value_of_a_dict(item: dict[Any, Any]) -> None:
    fast = legacy_object(item, "x")
    assert fast == legacy_value(item, "x")
    assert [type(v) for v in fast.values()] == [
        type(v)
        for v in dict(legacy_value(item, "x")).values()  # type: ignore[arg-type]
    ]


def test_legacy_object_still_refuses_what_json_cannot_hold() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValidationError, match="NaN or infinity"):
            legacy_object({"price": bad}, "active_positions.EURUSD")


def test_a_list_of_text_is_kept_and_subclasses_become_plain_text() -> None:
    codec = Codec()
    assert codec.normalize({"keys": ["a", "b"]}) == {"keys": ["a", "b"]}
    out = codec.normalize({"keys": ["a", Side.LONG]})
    assert isinstance(out, dict) and isinstance(out["keys"], list)
    assert [type(k) for k in out["keys"]] == [str, str]
