"""statekit's conformance suite against SecantusDB (and a real mongod when one is given),
once as the deployment chooses (change streams on SecantusDB) and once with ``watch=poll``
(commit numbers and a polling watch, what a standalone mongod gets)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from statekit_mongodb import MongoBackend
from statekit_mongodb.options import with_namespace

from statekit.testing import BackendContract, ScriptServerControl, fresh_namespace, server_control

from .conftest import drop, open_or_skip


class TestMongoBackend(BackendContract):
    # The test server is SecantusDB, a MongoDB-wire server written in Python: a contended
    # update() costs it ~20 ms, so 4 x 500 took 40 s per class. 4 x 150 still has four
    # processes racing on one key through hundreds of conflicts.
    increments_per_process = 150

    @pytest.fixture
    def backend_url(self, mongo_url: str) -> str:
        """A fresh namespace per test: the store starts empty, other tests' keys unseen."""
        return with_namespace(mongo_url, fresh_namespace())

    @pytest_asyncio.fixture
    async def backend(self, backend_url: str) -> AsyncIterator[MongoBackend]:
        backend = await open_or_skip(backend_url)
        yield backend
        await backend.aclose()
        await drop(backend_url)

    @pytest.fixture
    def server(self, mongo_url: str) -> ScriptServerControl | None:
        # scripts/servers.sh restarts only its own SecantusDB, never a mongod of yours.
        secantus = os.environ.get("STATEKIT_TEST_SECANTUS_URL", "")
        if mongo_url.split("?")[0] == secantus.split("?")[0]:
            return server_control("mongodb")
        return None


class TestMongoBackendPolling(TestMongoBackend):
    """The whole suite again with the polling watch and numbered versions."""

    @pytest.fixture
    def backend_url(self, mongo_url: str) -> str:
        # Worker processes open this URL too: every writer numbers its versions.
        return with_namespace(mongo_url, fresh_namespace()) + "&watch=poll"
