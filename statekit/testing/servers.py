"""Real servers for tests: finding them, and stopping/starting them inside a test.

The project's ``scripts/servers.sh`` starts throwaway servers and writes their
URLs to ``.servers/env`` (``make test`` exports it)::

    STATEKIT_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:53833/postgres
    STATEKIT_TEST_REDIS_URL=redis://127.0.0.1:53381/0
    STATEKIT_TEST_SERVERS_CTL=/path/to/scripts/servers.sh

A backend author running the suite against their own server sets the URL
variable; without ``STATEKIT_TEST_SERVERS_CTL`` the restart test does not run.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import pytest

from statekit.errors import BackendUnavailable

__all__ = [
    "ScriptServerControl",
    "fresh_namespace",
    "in_ci",
    "open_or_skip",
    "require_server",
    "server_control",
    "server_url",
    "start_hint",
]

Opened = TypeVar("Opened")


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing server is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def start_hint(name: str) -> str:
    """How statekit's own repository starts test server ``name`` and exports its URL."""
    return f"scripts/servers.sh start {name} && set -a && . .servers/env && set +a"


def require_server(name: str, reason: str, how_to_start: str | None = None) -> NoReturn:
    """Stop the test because server ``name`` is unreachable.

    Under CI this fails the test; locally it skips with ``how_to_start`` (default:
    :func:`start_hint`).
    """
    how_to_start = start_hint(name) if how_to_start is None else how_to_start
    message = f"{name} is not reachable ({reason}); start it with: {how_to_start}"
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def server_url(name: str) -> str:
    """``STATEKIT_TEST_<NAME>_URL``, or fail (CI) / skip (locally) saying how to start it."""
    variable = f"STATEKIT_TEST_{name.upper()}_URL"
    url = os.environ.get(variable, "").strip()
    if not url:
        require_server(name, f"{variable} is not set", f"{start_hint(name)} (make test does this)")
    return url


async def open_or_skip(
    open_backend: Callable[[str], Awaitable[Opened]],
    url: str,
    name: str,
    how_to_start: str | None = None,
) -> Opened:
    """``await open_backend(url)``; if server ``name`` does not answer
    (:class:`~statekit.errors.BackendUnavailable`), stop the test with
    :func:`require_server`: a failure under CI, locally a skip saying how to start it."""
    try:
        return await open_backend(url)
    except BackendUnavailable as exc:
        require_server(name, str(exc), how_to_start)


@dataclass(frozen=True)
class ScriptServerControl:
    """Stops and starts one server through ``scripts/servers.sh``, keeping its data and port."""

    script: str
    name: str

    def _run(self, action: str) -> None:
        done = subprocess.run(  # noqa: S603 - the project's own script, from its env file
            [self.script, action, self.name],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.script} {action} {self.name} failed: {done.stderr}")

    def stop(self) -> None:
        self._run("stop")

    def start(self) -> None:
        self._run("start")


def server_control(name: str) -> ScriptServerControl:
    """Stops and starts server ``name`` through ``STATEKIT_TEST_SERVERS_CTL``.

    Without that variable the calling test fails under CI (the restart is part of
    what CI proves) and skips locally, saying how to get it.
    """
    script = os.environ.get("STATEKIT_TEST_SERVERS_CTL", "").strip()
    if not script:
        require_server(
            name,
            "STATEKIT_TEST_SERVERS_CTL is not set, so it cannot be restarted",
            "set -a && . .servers/env && set +a (make test does this)",
        )
    return ScriptServerControl(script, name)


def fresh_namespace(tag: str = "t") -> str:
    """A namespace no other test uses: ``<tag>_<32 hex digits>``."""
    return f"{tag}_{uuid.uuid4().hex}"
