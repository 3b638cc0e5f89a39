"""The capability gates of the conformance suite's mixins: skips for what a backend
cannot do, never for a missing server (that fails under CI=true, in the fixtures)."""

from __future__ import annotations

import pytest

from statekit.backend import Capability
from statekit.store import StateStore


def needs(store: StateStore, *capabilities: Capability) -> None:
    """Skip the test (a capability skip, never a missing server) unless the backend
    declares every one of ``capabilities``."""
    missing = [c.value for c in capabilities if c not in store.capabilities]
    if missing:
        pytest.skip(f"{store.backend.name} does not declare {', '.join(missing)}")


def needs_url(store: StateStore, backend_url: str | None) -> str:
    """``backend_url``, or skip the test (a capability skip: an in-process store such as
    ``memory://`` has nothing other processes can open) when the backend gives none."""
    if backend_url is None:
        pytest.skip(f"{store.backend.name}: no URL other processes can open (a capability)")
    return backend_url
