"""Keys become safe, reversible file names; no key can reach outside the folder."""

from __future__ import annotations

import pytest
from statekit_file.names import HASH_MARK, MAX_NAME, KeyNames


@pytest.mark.parametrize(
    "key",
    ["position/EURUSD", "..", ".", "../../etc/passwd", "a/../b", "%2F", "~x", "日本/€", "a b\\c"],
)
def test_names_are_flat_and_reversible(key: str) -> None:
    name = KeyNames().name(key)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name + ".json" not in (".", "..")
    assert KeyNames.key(name) == key


def test_dangerous_keys_stay_inside_heads(tmp_path: object) -> None:
    assert KeyNames().name("../../x") == "..%2f..%2fx"
    assert KeyNames().name("position/EURUSD") == "position%2fEURUSD"


def test_long_keys_are_hashed() -> None:
    key = "日" * 512
    name = KeyNames().name(key)
    assert name.startswith(HASH_MARK) and len(name) <= MAX_NAME
    assert KeyNames.key(name) is None  # the key is read from inside the file


def test_case_insensitive_file_systems_keep_case_apart() -> None:
    names = KeyNames(case_sensitive=False)
    assert names.name("EURUSD").lower() != names.name("eurusd").lower()
    assert KeyNames.key(names.name("EURUSD")) == "EURUSD"
