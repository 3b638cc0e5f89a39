"""The entry point ``postgres`` in group ``statekit``: registers PostgresBackend."""

from __future__ import annotations

from statekit.hookspecs import hookimpl
from statekit.host import BackendRegistry
from statekit_postgres.backend import PostgresBackend

__all__ = ["statekit_register_backends"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``postgresql://`` and ``postgres://`` URLs (the two spellings libpq accepts)."""
    registry.add("postgresql", PostgresBackend)
    registry.add("postgres", PostgresBackend)
