"""statekit-mongodb: statekit's versioned keys in MongoDB (PyMongo's async API).

``store = await statekit.open("mongodb://host/statekit?namespace=bot1")``;
see docs/backends/mongodb.md.
"""

from statekit_mongodb.backend import MongoBackend
from statekit_mongodb.options import MongoOptions
from statekit_mongodb.watch import MongoWatch

__all__ = ["MongoBackend", "MongoOptions", "MongoWatch"]

__version__ = "0.1.0"
