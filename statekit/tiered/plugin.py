"""The built-in ``tiered`` plugin: read caches, mirrors and the fallback journal.

It registers through hooks like any plugin: ``statekit_declare_registries`` (the
shared caches' :class:`CacheRegistry`, filled by ``statekit_register_caches``) and
``statekit_open_tiered``, which :func:`statekit.open` calls only when a tier is
asked for (docs/tiered.md).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pydantic

from statekit.backend import ANY, Backend, Capability, Expect, Write
from statekit.config import CacheSettings, Settings
from statekit.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    ConflictError,
    PluginError,
)
from statekit.hookspecs import hookimpl
from statekit.host import PluginHost
from statekit.opening import backend_class_for
from statekit.redact import redact_url
from statekit.registry import SchemeRegistry
from statekit.store import STORE_ID_KEY
from statekit.tiered.backend import TieredBackend
from statekit.tiered.cache import ReadCache
from statekit.tiered.journal import FallbackJournal
from statekit.tiered.shared import SharedCache, SharedLevel
from statekit.tiered.unopened import UnopenedPrimary

__all__ = ["CacheRegistry", "cache_class"]

log = logging.getLogger("statekit.tiered")


class CacheRegistry(SchemeRegistry[SharedCache]):
    """Passed to ``statekit_register_caches``: URL scheme -> SharedCache class
    (the tiered store's shared second level, ``cache.shared_url``)."""

    hook = "statekit_register_caches"
    field = "caches"
    base = SharedCache
    what = "statekit.tiered.SharedCache"
    label = "shared cache"


def cache_class(host: PluginHost, scheme: str) -> type[SharedCache]:
    """The shared cache for a URL scheme (``cache.shared_url``), or a ConfigError
    naming the scheme, the installed ones and what to install."""
    from statekit.host import KNOWN_SCHEMES

    try:
        return host.find(CacheRegistry, scheme)
    except PluginError:
        pass
    installed = ", ".join(host.registry(CacheRegistry).schemes()) or "none"
    package = KNOWN_SCHEMES.get(scheme.lower())
    hint = f"; `pip install {package}` adds it" if package else ""
    failed = host.failure_of(package) if package else None
    if failed:
        hint = f"; {package} is installed but failed: {failed}"
    raise ConfigError(
        f"cache.shared_url: no shared cache for URL scheme {scheme!r} "
        f"(installed: {installed}){hint}",
        source="cache.shared_url",
    )


@hookimpl
def statekit_declare_registries(declared: list[type[Any]]) -> None:
    declared.append(CacheRegistry)


@hookimpl
def statekit_open_tiered(
    url: str,
    host: PluginHost,
    settings: Settings,
    cache: object,
    mirrors: Sequence[str] | None,
    fallback: str | None,
) -> Awaitable[Backend]:
    return _open(url, host, settings, cache, mirrors, fallback)


async def _open(
    url: str,
    host: PluginHost,
    settings: Settings,
    cache: object,
    mirrors: Sequence[str] | None,
    fallback: str | None,
) -> Backend:
    if fallback is None:
        fallback = settings.fallback_path if settings.enable_file_fallback else ""
    backend = await _open_primary(url, host, fallback=bool(fallback))
    mirror_urls = settings.mirrors if mirrors is None else list(mirrors)
    try:
        cache_settings = _cache_settings(settings, cache)
    except BaseException:
        await backend.aclose()
        raise
    if cache_settings.enabled or mirror_urls or fallback:
        backend = await _tiered(backend, host, settings, cache_settings, mirror_urls, fallback)
    return backend


async def _open_primary(url: str, host: PluginHost, *, fallback: bool) -> Backend:
    """Open the primary; with a fallback journal, a primary that cannot be reached yet
    becomes an :class:`~statekit.tiered.unopened.UnopenedPrimary` (docs/tiered.md)."""
    cls = backend_class_for(url, host)
    try:
        return await cls.open(url)
    except BackendUnavailable as exc:
        if not fallback:
            raise
        log.warning("opening %s without its primary, which is unavailable: %s", cls.name, exc)
        return UnopenedPrimary(
            cls.name,
            cls.capabilities,
            lambda: cls.open(url),
            exc,
            {"backend": cls.name, "url": redact_url(url)},
        )


def _cache_settings(settings: Settings, cache: object) -> CacheSettings:
    """The cache settings ``open(cache=...)`` asks for, over the configured ones."""
    if cache is None:
        return settings.cache
    if isinstance(cache, bool):
        return settings.cache.model_copy(update={"enabled": cache})
    if isinstance(cache, CacheSettings):
        return cache
    if not isinstance(cache, Mapping):
        raise ConfigError(
            f"cache= takes True, False, a mapping of cache settings or a CacheSettings, "
            f"not {type(cache).__name__}",
            source="cache",
        )
    try:  # a mapping turns the cache on unless it says enabled=False
        return CacheSettings.model_validate(
            {**settings.cache.model_dump(), "enabled": True, **cache}
        )
    except pydantic.ValidationError as exc:
        # include_input=False: shared_url may hold a password.
        problems = "; ".join(
            f"cache.{'.'.join(str(p) for p in err['loc'])}: "
            + ("unknown setting" if err["type"] == "extra_forbidden" else err["msg"])
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"cache={{...}}: {problems}", source="cache") from None


async def _store_id(primary: Backend) -> str:
    """The primary's own id (``_sk/store-id``), written by the first process that asks.

    Every process over the same primary reads the same id, whatever URL it used to
    reach it; two primaries never share one. It namespaces the shared cache.
    """
    expect: Expect = 0 if Capability.COMPARE_AND_SET in primary.capabilities else ANY
    for _ in range(3):
        head = (await primary.latest([STORE_ID_KEY])).get(STORE_ID_KEY)
        if head is not None and isinstance(head.data, str):
            return head.data
        write = Write(STORE_ID_KEY, "s" + uuid.uuid4().hex, "statekit.store_id", {}, expect)
        with contextlib.suppress(ConflictError):  # another process wrote it first: read theirs
            await primary.append([write], datetime.now(UTC))
    raise BackendError(
        f"the {primary.name} store did not keep its id {STORE_ID_KEY!r}, which names its "
        "entries in the shared cache (cache.shared_url)",
        backend=primary.name,
    )


async def _open_shared(primary: Backend, host: PluginHost, cache: CacheSettings) -> SharedCache:
    assert cache.shared_url is not None
    url = cache.shared_url.get_secret_value()
    scheme = urlsplit(url).scheme
    if not scheme:
        raise ConfigError(
            f"cache.shared_url {redact_url(url)!r} is not a URL; e.g. redis://localhost:6379/0",
            source="cache.shared_url",
        )
    cls = cache_class(host, scheme)  # before any I/O: a bad scheme fails fast
    return await cls.open(url, namespace=await _store_id(primary), ttl=cache.ttl_seconds)


async def _tiered(
    primary: Backend,
    host: PluginHost,
    settings: Settings,
    cache: CacheSettings,
    mirror_urls: Sequence[str],
    fallback: str,
) -> Backend:
    opened: list[Backend] = [primary]
    shared: SharedCache | None = None
    wants_shared = (
        cache.enabled and cache.shared_url is not None and cache.shared_url.get_secret_value()
    )

    async def attach_shared(primary: Backend) -> None:  # the primary opened late
        if wants_shared:
            tiered.shared = SharedLevel(await _open_shared(primary, host, cache))

    try:
        if wants_shared and not isinstance(primary, UnopenedPrimary):
            shared = await _open_shared(primary, host, cache)
        for url in mirror_urls:
            opened.append(await backend_class_for(url, host).open(url))
        tiered = TieredBackend(
            primary,
            cache=ReadCache(ttl=cache.ttl_seconds, max_size=cache.max_size)
            if cache.enabled
            else None,
            shared=shared,
            mirrors=opened[1:],
            fallback=await FallbackJournal.open(fallback) if fallback else None,
            on_open=attach_shared,
        )
        await tiered.start()
    except BaseException:
        if shared is not None:
            await shared.aclose()
        for backend in opened:
            await backend.aclose()
        raise
    return tiered
