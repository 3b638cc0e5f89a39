"""The ``mysql`` entry point: ``mysql://`` and ``mariadb://`` URLs open a MysqlBackend."""

from statekit.hookspecs import hookimpl
from statekit.registry import BackendRegistry


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """Register the MySQL/MariaDB backend for both schemes (the driver loads only now)."""
    from statekit_mysql.backend import MysqlBackend

    registry.add("mysql", MysqlBackend)
    registry.add("mariadb", MysqlBackend)
