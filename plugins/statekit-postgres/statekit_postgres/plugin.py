"""The entry point ``postgres`` in group ``statekit``: registers PostgresBackend."""

from __future__ import annotations

from statekit.hookspecs import hookimpl
from statekit.registry import BackendRegistry

__all__ = ["statekit_register_backends"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``postgresql://`` and ``postgres://`` URLs (the two spellings libpq accepts)."""
    from statekit_postgres.backend import PostgresBackend

    registry.add("postgresql", PostgresBackend)
    registry.add("postgres", PostgresBackend)
