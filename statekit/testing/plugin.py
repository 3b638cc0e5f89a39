"""pytest plugin (entry point ``pytest11``: ``statekit``), loaded when statekit is installed.

pytest loads it in every project whose environment has statekit, most of which never
use the conformance suite, so it needs nothing but pytest and statekit's own
dependencies: pytest-asyncio and the suite's modules are imported only by a test that
uses them (``from statekit.testing import BackendContract``). Importing it runs
``statekit.testing``'s ``__init__``, which has pytest rewrite the suite's asserts.

It registers the markers the conformance suite uses, so backend authors'
projects run it under ``--strict-markers`` without extra configuration.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "statekit_server(name): the test needs a real server named `name`"
    )
