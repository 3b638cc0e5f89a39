"""Opening a store: the URL's backend from the plugin host, tiers through a hook.

:func:`open` (``statekit.open``) finds the backend serving the URL's scheme (the host
imports only that plugin), asks the ``statekit_open_tiered`` hook for caches, mirrors
or a fallback journal when any is wanted, and wraps the backend in a
:class:`~statekit.store.StateStore`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from statekit.backend import Backend
from statekit.codec import Codec
from statekit.errors import ConfigError, ValidationError
from statekit.host import PluginHost
from statekit.observe.store import instrument
from statekit.observe.tracing import tracer
from statekit.redact import redact_url
from statekit.store import StateStore

if TYPE_CHECKING:
    from statekit.config import CacheSettings, Settings

__all__ = ["backend_class_for", "open"]


def backend_class_for(url: str, host: PluginHost) -> type[Backend]:
    """The backend class serving ``url``'s scheme; a statekit error for a bad URL."""
    if not url.strip():
        # An explicitly empty URL is a mistake (an unset variable?), not "the default".
        raise ConfigError(
            "the store URL is empty; give one, e.g. sqlite:///statekit.db or memory://, "
            "or pass none to use the configured one",
            source="url",
        )
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket: redis://[::1
        raise ConfigError(
            f"store URL {redact_url(url)!r} is malformed: {exc}", source="url"
        ) from None
    if not scheme:
        raise ValidationError(
            f"{redact_url(url)!r} is not a store URL; try sqlite:///statekit.db or memory://",
            reason="url",
        )
    return host.backend_class(scheme)


def _wants_tiers(
    settings: Settings, cache: object, mirrors: Sequence[str] | None, fallback: str | None
) -> bool:
    if fallback if fallback is not None else settings.enable_file_fallback:
        return True
    if mirrors if mirrors is not None else settings.mirrors:
        return True
    if cache is None:
        return settings.cache.enabled
    return cache is not False


async def open(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    host: PluginHost | None = None,
    codec: Codec | None = None,
    primary: str | None = None,
    cache: bool | Mapping[str, Any] | CacheSettings | None = None,
    mirrors: Sequence[str] | None = None,
    fallback: str | None = None,
) -> StateStore:
    """Open the store at ``url`` with the backend registered for its scheme.

    ``url`` defaults to the configured one (``STATEKIT_URL``, the legacy
    ``TRADING_STATE_*`` settings, ``config.json``), else ``sqlite:///statekit.db``;
    an explicitly empty ``url`` is a ConfigError, not the default.
    ``settings`` defaults to :func:`statekit.config.load_settings`.

    Tiers (docs/tiered.md), each defaulting to the settings:

    :param primary: another name for ``url``, as the tiered store reads.
    :param cache: read caches: ``True`` for the configured ones (an in-process cache,
        plus the shared ``cache.shared_url`` when set), ``False`` for none, or cache
        settings over the configured ones, e.g. ``{"ttl_seconds": 30,
        "shared_url": "redis://cache:6379/0"}`` (a mapping turns caching on).
    :param mirrors: store URLs every committed version is copied to, write-behind.
    :param fallback: a journal file that accepts writes while the primary is down
        (``enable_file_fallback`` and ``fallback_path``); ``""`` turns it off. With it,
        the store opens even while the primary is unreachable (docs/tiered.md).
    """
    from statekit.config import load_settings

    settings = settings or load_settings()
    host = host or PluginHost.from_settings(settings)
    if url is None:
        url = primary
    if url is None:
        url = settings.store_url()
    cls = backend_class_for(url, host)  # before any I/O: a bad URL fails fast
    if _wants_tiers(settings, cache, mirrors, fallback):
        opening = host.hook.statekit_open_tiered(
            url=url, host=host, settings=settings, cache=cache, mirrors=mirrors, fallback=fallback
        )
        if opening is None:
            raise ConfigError(
                "caches, mirrors and the fallback journal need the built-in 'tiered' plugin, "
                "which is blocked (STATEKIT_BLOCKED_PLUGINS or plugins.blocked)",
                source="plugins.blocked",
            )
        backend = await opening
    else:
        backend = await cls.open(url)
    store = StateStore(
        backend,
        validators=host.lazy_validators() if settings.enable_validation else None,
        codec=codec,
        max_value_bytes=settings.max_value_bytes,
    )
    if tracer() is not None:  # a tracer provider is configured: trace the operations
        instrument(store)
    return store
