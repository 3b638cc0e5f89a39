"""What is particular to MySQL/MariaDB: byte-exact keys, URLs, namespaces, a caller's pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aiomysql  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from statekit_mysql import MysqlBackend

import statekit
from statekit.errors import BackendError, BackendUnavailable, ConfigError
from statekit.store import StateStore

from .conftest import drop, open_or_skip

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def store(namespaced: Callable[..., str]) -> AsyncIterator[StateStore]:
    url = namespaced()
    backend = await open_or_skip(url)
    yield StateStore(backend)
    await backend.aclose()
    await drop(url)


async def test_keys_differing_only_by_case_or_trailing_space_are_distinct(
    store: StateStore,
) -> None:
    """MySQL's default collations would make these one key (and `kéy` equal `key`)."""
    keys = ["key", "Key", "KEY", "key ", "key  ", "kéy", "ke"]
    for key in keys:
        assert (await store.put(key, {"was": key}, expect=0)).version == 1
    for key in keys:
        got = await store.get(key)
        assert got is not None and got.key == key and got.data == {"was": key}
    # Byte order of UTF-8, which is code point order.
    assert [r.key async for r in store.scan("k")] == sorted(k for k in keys if k[0] == "k")
    assert [r.key async for r in store.scan("key ")] == ["key ", "key  "]


async def test_kinds_are_compared_byte_for_byte(store: StateStore) -> None:
    await store.put("a", 1, kind="order")
    await store.put("b", 2, kind="Order")
    await store.put("c", 3, kind="order ")
    assert [r.key async for r in store.scan(kind="order")] == ["a"]
    assert [r.key async for r in store.scan(kind="order ")] == ["c"]


async def test_namespaces_do_not_see_each_other(namespaced: Callable[..., str]) -> None:
    one, two = namespaced("one"), namespaced("two")
    a, b = await open_or_skip(one), await open_or_skip(two)
    try:
        await StateStore(a).put("shared/key", "a")
        assert await StateStore(b).get("shared/key") is None
        assert (await StateStore(b).put("shared/key", "b")).version == 1
        assert await b.drop_namespace() == 1
        assert (await StateStore(a).get("shared/key")).data == "a"  # type: ignore[union-attr]
    finally:
        await a.aclose()
        await b.aclose()
        await drop(one)


async def test_mariadb_scheme_and_statekit_open(namespaced: Callable[..., str]) -> None:
    url = namespaced().replace("mysql://", "mariadb://", 1)
    await (await open_or_skip(url)).aclose()  # skips without a server
    async with await statekit.open(url) as store:
        assert isinstance(store.backend, MysqlBackend)
        assert (await store.put("k", 1)).version == 1
    await drop(url)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?colour=red", "colour"),
        ("?pool_max=0", "pool_max"),
        ("?pool_max=many", "pool_max"),
        ("?connect_timeout=nan", "connect_timeout"),
        ("?connect_timeout=0", "connect_timeout"),
        ("?poll_interval=-1", "poll_interval"),
        ("?namespace=a/b", "namespace"),
        ("?namespace=a&namespace=b", "namespace"),
        ("?flag", "flag"),
    ],
)
async def test_bad_options_are_config_errors_naming_the_option(query: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        await MysqlBackend.open("mysql://bot:s3cret@127.0.0.1:1/db" + query)
    assert named in str(err.value) and "s3cret" not in str(err.value)
    assert err.value.source == "url"


@pytest.mark.parametrize(
    "url", ["mysql://h:notaport/db", "mysql://h:3306", "mysql://h:3306/", "postgresql://h/db"]
)
async def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        await MysqlBackend.open(url)


async def test_an_unreachable_server_is_unavailable_without_the_password() -> None:
    with pytest.raises(BackendUnavailable) as err:
        await MysqlBackend.open("mysql://bot:s3cret@127.0.0.1:1/db?connect_timeout=2")
    assert "s3cret" not in str(err.value) and "mysql://bot:***@127.0.0.1:1/db" in str(err.value)
    assert err.value.backend == "mysql"


async def test_a_wrong_password_is_a_backend_error(mysql_url: str) -> None:
    await (await open_or_skip(mysql_url)).aclose()
    parts = urlsplit(mysql_url)
    url = mysql_url.replace(f"//{parts.netloc}", f"//nobody:wrong@{parts.hostname}:{parts.port}")
    with pytest.raises(BackendError) as err:
        await MysqlBackend.open(url)
    assert not err.value.retryable and "wrong" not in str(err.value)


async def test_a_callers_pool_stays_open(namespaced: Callable[..., str]) -> None:
    url = namespaced()
    await (await open_or_skip(url)).aclose()
    parts = urlsplit(url)
    pool = await aiomysql.create_pool(
        host=parts.hostname,
        port=parts.port,
        user=parts.username,
        db=parts.path.lstrip("/"),
        autocommit=True,
        charset="utf8mb4",
    )
    try:
        namespace = url.rsplit("namespace=", 1)[1]
        async with await MysqlBackend.from_pool(pool, namespace=namespace) as backend:
            assert (await StateStore(backend).put("k", 1)).version == 1
        async with pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute("SELECT 1")
            assert await cursor.fetchall() == ((1,),)
    finally:
        pool.close()
        await pool.wait_closed()
        await drop(url)
