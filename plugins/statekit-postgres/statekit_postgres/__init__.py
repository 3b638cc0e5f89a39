"""statekit-postgres: statekit's versioned keys in PostgreSQL (asyncpg).

``store = await statekit.open("postgresql://user@host/db?namespace=bot1")``;
see docs/backends/postgresql.md.
"""

from statekit_postgres.backend import PostgresBackend
from statekit_postgres.options import PostgresOptions
from statekit_postgres.watch import PostgresWatch

__all__ = ["PostgresBackend", "PostgresOptions", "PostgresWatch"]

__version__ = "0.1.0"
