"""Fixtures for the file plugin's tests: fresh store folders."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A folder that does not exist yet, inside a fresh temp folder."""
    return tmp_path / "store"


@pytest.fixture
def store_url(store_dir: Path) -> str:
    """The file:// URL of :func:`store_dir`."""
    return f"file://{store_dir}"
