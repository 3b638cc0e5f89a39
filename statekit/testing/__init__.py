"""Test support shipped in the wheel: the backend conformance suite and server helpers.

Install with ``pip install statekit[testing]``. See docs/writing-a-backend.md.
"""

from statekit.testing.contract import BackendContract
from statekit.testing.history import TimeOrderContract, assert_true_history
from statekit.testing.inputs import BadInputContract
from statekit.testing.outage import OutageContract
from statekit.testing.servers import (
    ScriptServerControl,
    fresh_namespace,
    in_ci,
    require_server,
    server_control,
    server_url,
)

__all__ = [
    "BackendContract",
    "BadInputContract",
    "OutageContract",
    "ScriptServerControl",
    "TimeOrderContract",
    "assert_true_history",
    "fresh_namespace",
    "in_ci",
    "require_server",
    "server_control",
    "server_url",
]
