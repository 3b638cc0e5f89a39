"""The one capability gate of the conformance suite's mixins."""

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
