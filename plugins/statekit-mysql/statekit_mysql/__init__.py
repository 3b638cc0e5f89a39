"""statekit's MySQL and MariaDB backend (``mysql://``, ``mariadb://``), built on statekit.kit."""

from statekit_mysql.backend import MysqlBackend

__all__ = ["MysqlBackend"]

__version__ = "0.1.0"
