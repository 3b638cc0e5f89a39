"""The tiered store's shared cache level, on an in-process SharedCache registered through
``statekit_register_caches`` (the Redis one is tested in plugins/statekit-redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Self

import pytest

import statekit
from statekit import ConfigError, Health, PluginHost, Record
from statekit.backend import Write
from statekit.backends.memory import MemoryBackend
from statekit.config import CacheSettings, Settings, load_settings
from statekit.errors import BackendUnavailable
from statekit.hookspecs import hookimpl
from statekit.store import STORE_ID_KEY
from statekit.tiered import ReadCache, SharedCache, SharedLevel, TieredBackend
from statekit.tiered.plugin import CacheRegistry, cache_class

SERVERS: dict[str, dict[str, Record | None]] = {}
"""What each 'server' of DictCache holds, by URL: shared by every instance in the process."""


class DictCache(SharedCache):
    """A SharedCache over a process-wide dict: version-monotone, switchable off. No ttl."""

    name = "dict"
    opened: ClassVar[list[DictCache]] = []

    def __init__(self, url: str, namespace: str) -> None:
        self.entries = SERVERS.setdefault(f"{url}#{namespace}", {})
        self.namespace = namespace
        self.down = False
        self.calls = 0

    @classmethod
    async def open(cls, url: str, *, namespace: str, ttl: float) -> Self:
        cache = cls(url, namespace)
        DictCache.opened.append(cache)
        return cache

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise BackendUnavailable("dict cache is down", backend=self.name)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Record | None]:
        self._check()
        return {k: self.entries[k] for k in keys if k in self.entries}

    async def put_many(self, heads: Mapping[str, Record | None]) -> None:
        self._check()
        for key, head in heads.items():
            old = self.entries.get(key)
            if key not in self.entries or (head.version if head else 0) >= (
                old.version if old else 0
            ):
                self.entries[key] = head

    async def invalidate(self, keys: Sequence[str]) -> None:
        self._check()
        for key in keys:
            self.entries.pop(key, None)

    async def health(self) -> Health:
        self._check()
        return Health(True, 0.0)

    async def aclose(self) -> None:
        pass


class DictCachePlugin:
    @hookimpl
    def statekit_register_caches(self, registry: CacheRegistry) -> None:
        registry.add("dict", DictCache)


def host() -> PluginHost:
    return PluginHost(autoload=False, plugins=[("dictcache", DictCachePlugin())])


async def open_store(url: str, shared: str = "dict://one", **cache: object) -> statekit.StateStore:
    return await statekit.open(
        url, settings=Settings(), host=host(), cache={"shared_url": shared, **cache}
    )


def tiers(store: statekit.StateStore) -> TieredBackend:
    assert isinstance(store.backend, TieredBackend)
    return store.backend


# -- the hook and the registry --------------------------------------------------------------


def test_the_hook_registers_caches_by_scheme() -> None:
    h = host()
    assert cache_class(h, "DICT") is DictCache
    info = {i.name: i for i in h.plugins()}["dictcache"]
    assert info.caches == ["dict"] and info.as_dict()["caches"] == ["dict"]
    with pytest.raises(ConfigError, match=r"'memcached'.*installed: dict") as caught:
        cache_class(h, "memcached")
    assert caught.value.source == "cache.shared_url"
    with pytest.raises(ConfigError, match="pip install statekit-redis"):
        cache_class(PluginHost(autoload=False), "redis")


def test_a_cache_class_that_is_not_a_shared_cache_is_refused() -> None:
    class Wrong:
        @hookimpl
        def statekit_register_caches(self, registry: CacheRegistry) -> None:
            registry.add("wrong", dict)  # type: ignore[arg-type]

    h = PluginHost(autoload=False, plugins=[("wrong", Wrong())])
    assert h.registry(CacheRegistry).schemes() == []
    (failed,) = h.failures()
    assert "not a statekit.tiered.SharedCache subclass" in str(failed.error)


# -- open() and the settings -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_bad_shared_url_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="no shared cache for URL scheme 'memcached'"):
        await open_store("memory://", "memcached://cache:11211")
    with pytest.raises(ConfigError, match="is not a URL"):
        await open_store("memory://", "just-a-host")
    with pytest.raises(ConfigError, match=r"cache\.ttl_seconds"):
        await open_store("memory://", ttl_seconds=0)
    with pytest.raises(ConfigError, match=r"cache\.shared: unknown setting"):
        await statekit.open("memory://", settings=Settings(), cache={"shared": "dict://x"})
    with pytest.raises(ConfigError, match="not list"):
        await statekit.open("memory://", settings=Settings(), cache=["dict://x"])  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_shared_url_comes_from_the_environment_and_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATEKIT_CACHE__ENABLED", "true")
    monkeypatch.setenv("STATEKIT_CACHE__SHARED_URL", "dict://user:pw@env")
    settings = load_settings(config_file="", env_file="")
    assert settings.masked()["cache"]["shared_url"] == "***"
    async with await statekit.open("memory://", settings=settings, host=host()) as store:
        shared = tiers(store).shared
        assert shared is not None and isinstance(shared.cache, DictCache)
        assert tiers(store).cache is not None  # the in-process level comes with it
    # cache=False wins over the settings; cache=True takes them, shared_url included.
    async with await statekit.open("memory://", settings=settings, host=host(), cache=False) as s:
        assert not isinstance(s.backend, TieredBackend)
    off = Settings(cache=CacheSettings(shared_url="dict://x"))  # type: ignore[arg-type]
    async with await statekit.open("memory://", settings=off, host=host()) as s:
        assert not isinstance(s.backend, TieredBackend)  # enabled=false: no cache at all
    async with await statekit.open("memory://", settings=off, host=host(), cache=True) as s:
        assert tiers(s).shared is not None


@pytest.mark.asyncio
async def test_processes_over_one_primary_share_a_namespace_and_others_do_not(
    tmp_path: Path,
) -> None:
    one, two = f"sqlite:///{tmp_path}/one.db", f"sqlite:///{tmp_path}/two.db"
    async with (
        await open_store(one) as a,
        await open_store(one) as b,
        await open_store(two) as c,
    ):
        names = [tiers(s).shared.cache.namespace for s in (a, b, c)]  # type: ignore[union-attr, attr-defined]
        assert names[0] == names[1] != names[2]
        assert [r.key async for r in a.scan()] == []  # users never see the store id
        assert (await a.backend.latest([STORE_ID_KEY]))[STORE_ID_KEY].data == names[0]


# -- reads and writes through both levels ------------------------------------------------------


@pytest.mark.asyncio
async def test_a_head_written_by_one_store_is_read_by_another_without_the_primary(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    async with await open_store(url) as a, await open_store(url) as b:
        await a.put("pos/EURUSD", {"qty": "1.5"})
        assert (await b.get("pos/EURUSD")).data == {"qty": "1.5"}  # type: ignore[union-attr]
        assert await b.get("absent") is None  # asks the primary once, caches the absence
        assert await a.get("absent") is None  # served by the shared level
        detail_a, detail_b = (await a.health()).detail, (await b.health()).detail
        assert detail_b["cache"]["primary_reads"] == 1  # type: ignore[index]
        assert detail_a["cache"]["primary_reads"] == 0  # type: ignore[index]
        assert detail_b["shared_cache"]["hits"] == 1  # type: ignore[index]
        assert detail_a["shared_cache"]["hits"] == 1  # type: ignore[index]
        assert detail_b["shared_cache"]["ok"] is True  # type: ignore[index]


@pytest.mark.asyncio
async def test_an_older_version_never_replaces_a_newer_one() -> None:
    async with await open_store("memory://", "dict://mono") as store:
        backend = tiers(store)
        assert backend.shared is not None
        await store.put("k", 1)
        second = await store.put("k", 2)
        first = (await store.history("k", newest_first=False))[0]
        await backend.shared.put_many({"k": first})  # a slow reader's stale fill
        await backend.shared.put_many({"k": None})  # or a stale absence
        cache: DictCache = backend.shared.cache  # type: ignore[assignment]
        assert cache.entries["k"] == second


@pytest.mark.asyncio
async def test_a_conflict_evicts_the_key_from_both_levels() -> None:
    primary = MemoryBackend()
    primary.capabilities = MemoryBackend.capabilities - {statekit.Capability.WATCH}
    backend = TieredBackend(
        primary,
        cache=ReadCache(ttl=60, max_size=10),
        shared=await DictCache.open("dict://c", namespace="n", ttl=60),
    )
    await backend.start()
    async with statekit.StateStore(backend) as store:
        await store.put("n", 1)
        await primary.append([Write("n", 5)], datetime.now(UTC))
        assert (await store.update("n", lambda v: v + 1)).data == 6  # type: ignore[operator]
        assert backend.shared is not None and backend.shared.stats.invalidations == 1


@pytest.mark.asyncio
async def test_other_writers_commits_reach_the_shared_level_through_watch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/w.db?poll_interval=0.01"
    async with (
        await open_store(url, "dict://watch") as cached,
        await statekit.open(url, settings=Settings()) as plain,  # bypasses the caches
    ):
        await cached.put("k", 1)
        await plain.put("k", 2)
        cache: DictCache = tiers(cached).shared.cache  # type: ignore[assignment, union-attr]
        for _ in range(500):
            if cache.entries["k"] is not None and cache.entries["k"].version == 2:
                break
            await asyncio.sleep(0.01)
        assert cache.entries["k"].data == 2  # type: ignore[union-attr]


# -- a failing shared level ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_failing_shared_level_never_fails_reads_or_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with await open_store("memory://", "dict://down") as store:
        backend = tiers(store)
        level = backend.shared
        assert level is not None
        cache: DictCache = level.cache  # type: ignore[assignment]
        level.retry_after = level.max_retry_after = 0.0  # retry at once: every call tries
        cache.down = True
        for i in range(3):
            await store.put("k", i)
            assert (await store.get(f"other/{i}")) is None
        assert (await store.get("k")).data == 2  # type: ignore[union-attr]
        assert level.stats.errors >= 6 and level.failing
        assert level.stats.last_error == "dict cache is down"
        detail = (await store.health()).detail["shared_cache"]
        assert detail["ok"] is False and detail["errors"] >= 6  # type: ignore[index]
        warnings = [r for r in caplog.records if "shared cache dict failed" in r.message]
        assert len(warnings) == 1  # logged once per outage
        cache.down = False
        await store.put("k", 3)
        assert not level.failing and cache.entries["k"].data == 3  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_while_failing_the_level_is_left_alone_until_its_retry_time() -> None:
    cache = await DictCache.open("dict://skip", namespace="n", ttl=60)
    level = SharedLevel(cache, retry_after=3600)
    cache.down = True
    assert await level.get_many(["a"]) == {}
    calls = cache.calls
    await level.put_many({"a": None})
    assert await level.get_many(["a", "b"]) == {}
    assert cache.calls == calls  # skipped: no call reached the cache
    assert (level.stats.errors, level.stats.skipped, level.stats.misses) == (1, 2, 3)


@pytest.mark.asyncio
async def test_a_hanging_shared_level_is_cut_off_by_the_timeout() -> None:
    class Hanging(DictCache):
        async def get_many(self, keys: Sequence[str]) -> dict[str, Record | None]:
            await asyncio.sleep(3600)
            return {}

    level = SharedLevel(Hanging("dict://hang", "n"), timeout=0.01)
    assert await level.get_many(["a"]) == {}
    assert level.stats.errors == 1 and "timed out" in str(level.stats.last_error)
