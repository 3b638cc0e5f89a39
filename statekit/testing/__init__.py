"""Test support shipped in the wheel: the backend conformance suite and server helpers.

Install with ``pip install statekit[testing]``. See docs/writing-a-backend.md.
"""

from statekit.testing.contract import BackendContract
from statekit.testing.servers import require_server

__all__ = ["BackendContract", "require_server"]
