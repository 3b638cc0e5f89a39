"""What a test does when the real server it needs is not running."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["in_ci", "require_server"]


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing server is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_server(name: str, reason: str, how_to_start: str) -> NoReturn:
    """Stop the test because server ``name`` is unreachable.

    Under CI this fails the test; locally it skips with ``how_to_start``.
    """
    message = f"{name} is not reachable ({reason}); start it with: {how_to_start}"
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)
