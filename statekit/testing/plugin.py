"""pytest plugin (entry point ``pytest11``: ``statekit``), loaded when statekit is installed.

It registers the markers the conformance suite uses, so backend authors'
projects run it under ``--strict-markers`` without extra configuration.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "statekit_server(name): the test needs a real server named `name`"
    )
