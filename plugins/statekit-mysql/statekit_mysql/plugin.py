"""The ``mysql`` entry point: ``mysql://`` and ``mariadb://`` URLs open a MysqlBackend."""

from statekit.hookspecs import hookimpl
from statekit.host import BackendRegistry
from statekit_mysql.backend import MysqlBackend


@hookimpl
def statekit_register_backends(registry: BackendRegistry) -> None:
    """Register the MySQL/MariaDB backend for both schemes."""
    registry.add("mysql", MysqlBackend)
    registry.add("mariadb", MysqlBackend)
