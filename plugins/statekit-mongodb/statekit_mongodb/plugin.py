"""The entry point ``mongodb`` in group ``statekit``: registers MongoBackend."""

from __future__ import annotations

from statekit.hookspecs import hookimpl
from statekit.registry import BackendRegistry

__all__ = ["statekit_register_backends"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``mongodb://`` and ``mongodb+srv://`` (DNS seed list) URLs."""
    from statekit_mongodb.backend import MongoBackend

    registry.add("mongodb", MongoBackend)
    registry.add("mongodb+srv", MongoBackend)
