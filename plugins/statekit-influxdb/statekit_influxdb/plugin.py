"""The statekit plugin: serves ``influxdb://`` and ``influxdbs://`` (TLS) store URLs."""

from __future__ import annotations

from statekit.hookspecs import hookimpl
from statekit.registry import BackendRegistry

__all__ = ["statekit_register_backends"]


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """``influxdb://`` (HTTP) and ``influxdbs://`` (HTTPS) URLs open an :class:`InfluxBackend`."""
    from statekit_influxdb.backend import InfluxBackend

    registry.add("influxdb", InfluxBackend)
    registry.add("influxdbs", InfluxBackend)
