"""The ``mongodb://`` URL: statekit's own options, and the URI PyMongo gets.

::

    mongodb[+srv]://[user:password@]host[:port][,host...][/database][?namespace=bot1&...]

statekit reads ``namespace``, ``database``, ``transactions``, ``watch`` and
``poll_interval`` and removes them;
every option PyMongo knows (``replicaSet``, ``tls``, ``authSource``...) stays in the
URI unchanged. Anything else is a ConfigError, so a misspelt option fails at
``open()`` instead of becoming a PyMongo warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pymongo.common import URI_OPTIONS_ALIAS_MAP, URI_OPTIONS_VALIDATOR_MAP

from statekit import codec
from statekit.errors import ConfigError
from statekit.kit import StoreUrl, with_options

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_NAMESPACE",
    "DEFAULT_POLL_INTERVAL",
    "DRIVER_DEFAULTS",
    "STATEKIT_PARAMS",
    "MongoOptions",
    "Transactions",
    "WatchMode",
    "check_namespace",
    "with_namespace",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_DATABASE = "statekit"

DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between a polling watcher's looks at the history (as the file store)."""

STATEKIT_PARAMS: frozenset[str] = frozenset(
    {"namespace", "database", "transactions", "watch", "poll_interval"}
)
"""Query parameters statekit reads itself and removes before PyMongo sees the URI."""

_DRIVER_PARAMS: frozenset[str] = frozenset(
    {name.lower() for name in URI_OPTIONS_VALIDATOR_MAP}
    | {alias.lower() for aliases in URI_OPTIONS_ALIAS_MAP.values() for alias in aliases}
)

DRIVER_DEFAULTS: dict[str, int] = {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000}
"""PyMongo options statekit sets when the URL does not: short, so a call to a server
that is down fails fast with BackendUnavailable instead of waiting PyMongo's 30 s."""

Transactions = Literal["auto", "on", "off"]
"""``auto`` (use them when the deployment has them), ``on`` (require them) or ``off``."""
_TRANSACTIONS = ("auto", "on", "off")

WatchMode = Literal["auto", "poll", "changestream"]
"""``auto`` (change streams where the deployment has them, else polling), ``poll``
(number every commit and poll, on any deployment) or ``changestream`` (require them)."""
_WATCH_MODES = ("auto", "poll", "changestream")

# MongoDB refuses these in database names (and we keep them short and printable).
_DATABASE = re.compile(r"[^/\\. \"$*<>:|?\x00]{1,63}")


def check_namespace(namespace: str, where: str) -> str:
    """``namespace`` if it is a valid namespace name (statekit's one rule), else ConfigError."""
    return codec.check_namespace(namespace, backend="mongodb", where=where)


def _check_watch(watch: str, where: str) -> WatchMode:
    if watch not in _WATCH_MODES:
        raise ConfigError(
            f"mongodb {where}: watch={watch!r} must be auto, poll or changestream", source="url"
        )
    return cast(WatchMode, watch)


def _check_poll_interval(value: str | float, where: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.001 <= seconds <= 60:  # also refuses nan and inf
        raise ConfigError(
            f"mongodb {where}: poll_interval={value!r} must be a number of seconds "
            "from 0.001 to 60",
            source="url",
        )
    return seconds


def _check_database(database: str, where: str) -> str:
    if not _DATABASE.fullmatch(database):
        raise ConfigError(
            f"mongodb {where}: database={database!r} must be 1 to 63 characters without "
            '/ \\ . space " $ * < > : | ? or NUL',
            source="url",
        )
    return database


@dataclass(frozen=True, slots=True)
class MongoOptions:
    """A parsed ``mongodb://`` URL.

    :param uri: the URL for PyMongo, statekit's options removed. It may hold a
        password: never show it; show :attr:`shown`.
    :param shown: the whole URL with its password masked, for errors and doctor.
    :param namespace: whose keys these are; stores in other namespaces of the same
        database never see or touch them.
    :param database: the MongoDB database holding statekit's two collections.
    :param transactions: ``auto``, ``on`` or ``off`` (see docs/backends/mongodb.md).
    :param watch: ``auto``, ``poll`` or ``changestream`` (see docs/backends/mongodb.md).
    :param poll_interval: seconds between a polling watcher's looks at the history.
    :param client_kwargs: PyMongo keyword arguments statekit adds (its defaults).
    :param url: the URL as given (for the DriverGuard, which masks its secrets; never
        show it).
    """

    uri: str = field(repr=False)
    shown: str
    namespace: str = DEFAULT_NAMESPACE
    database: str = DEFAULT_DATABASE
    transactions: Transactions = "auto"
    watch: WatchMode = "auto"
    poll_interval: float = DEFAULT_POLL_INTERVAL
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    url: str = field(default="", repr=False)

    @classmethod
    def for_client(
        cls,
        namespace: str,
        database: str,
        transactions: Transactions = "auto",
        watch: WatchMode = "auto",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> MongoOptions:
        """Options of a backend built on a caller's client (no URL of its own)."""
        if transactions not in _TRANSACTIONS:
            raise ConfigError(
                f"mongodb client: transactions={transactions!r} must be one of auto, on, off",
                source="url",
            )
        return cls(
            uri="",
            shown="<AsyncMongoClient>",
            namespace=check_namespace(namespace, "client"),
            database=_check_database(database, "client"),
            transactions=transactions,
            watch=_check_watch(watch, "client"),
            poll_interval=_check_poll_interval(poll_interval, "client"),
        )

    @classmethod
    def parse(cls, url: str) -> MongoOptions:
        """Split ``url`` into statekit's options and PyMongo's URI; ConfigError when invalid."""
        u = StoreUrl.parse(
            url,
            backend="mongodb",
            schemes=("mongodb", "mongodb+srv"),
            options=STATEKIT_PARAMS,
            driver_options=lambda name: name.lower() in _DRIVER_PARAMS,
            example="mongodb://user:password@host:port/database?namespace=...",
            needs_host=True,
            multi_host=True,
        )
        path_db = u.database or ""
        database = u.text("database", path_db or DEFAULT_DATABASE)
        if path_db and "database" in u.options and database != path_db:
            raise ConfigError(
                f"mongodb URL {u.shown!r} names database {path_db!r} in its path and "
                f"{database!r} in database=; give one",
                source="url",
            )
        _check_database(database, u.shown)
        given = {name.lower() for name, _ in u.driver}
        client_kwargs: dict[str, Any] = {
            name: value for name, value in DRIVER_DEFAULTS.items() if name.lower() not in given
        }
        return cls(
            # The path stays: it is also MongoDB's default authentication database.
            uri=u.driver_url(scheme=u.scheme, empty_path="/"),
            shown=u.shown,
            namespace=u.namespace(),
            database=database,
            transactions=cast(Transactions, u.choice("transactions", "auto", _TRANSACTIONS)),
            watch=_check_watch(u.text("watch", "auto"), u.shown),
            poll_interval=_check_poll_interval(
                u.text("poll_interval", str(DEFAULT_POLL_INTERVAL)), u.shown
            ),
            client_kwargs=client_kwargs,
            url=url,
        )


def with_namespace(url: str, namespace: str) -> str:
    """``url`` with its ``namespace`` replaced (a bad URL is a ConfigError here)."""
    check_namespace(namespace, MongoOptions.parse(url).shown)
    base, mark, query = url.partition("?")
    if "/" not in base.split("://", 1)[1]:
        base += "/"  # PyMongo wants the "/" before the options
    return with_options(base + mark + query, namespace=namespace)
