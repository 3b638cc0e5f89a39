"""The conformance suite against the two built-in backends.

The classes live in the wheel, as the worked example for backend authors
(statekit/testing/example.py); collected here, they run in the gate.
"""

from __future__ import annotations

from statekit.testing.example import TestMemoryBackend, TestSqliteBackend

__all__ = ["TestMemoryBackend", "TestSqliteBackend"]
