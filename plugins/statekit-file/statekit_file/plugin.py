"""The statekit plugin: serves ``file://`` store URLs."""

from __future__ import annotations

from statekit.hookspecs import hookimpl
from statekit.registry import BackendRegistry

__all__ = ["statekit_register_backends"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``file:///dir`` URLs open a :class:`FileBackend`."""
    from statekit_file.backend import FileBackend

    registry.add("file", FileBackend)
