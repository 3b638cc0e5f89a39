"""Store URLs: ``scheme://user:password@host:port/database?option=value``, parsed once.

::

    url = StoreUrl.parse(text, backend="mysql", schemes=("mysql", "mariadb"),
                         options=("namespace", "pool_max", "connect_timeout"))
    url.host, url.port, url.user, url.password, url.database
    url.integer("pool_max", 10, minimum=1)        # ConfigError names the option
    url.seconds("connect_timeout", 10.0, zero=False)
    url.namespace()                               # statekit's one namespace rule

Every problem is a :class:`~statekit.errors.ConfigError` (``source="url"``) that
names the backend, the option and the URL with its password masked: a malformed
URL or port, another scheme, a ``#fragment``, an unknown option (the message lists
the known ones), an option given twice or without ``=``, a value of the wrong type
or out of range (``nan`` and ``inf`` included). Options a driver understands can
pass through untouched (``driver_options``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from statekit.codec import DEFAULT_NAMESPACE, check_namespace
from statekit.errors import ConfigError
from statekit.redact import redact_url

__all__ = ["StoreUrl"]


def _pairs(query: str) -> list[tuple[str, str]]:
    """The query's ``name=value`` pairs; ValueError for a part without ``=``."""
    if not query:
        return []
    for part in query.split("&"):
        if part and "=" not in part:
            raise ValueError(f"option {unquote(part)!r} has no '=value'")
    return parse_qsl(query, keep_blank_values=True, strict_parsing=False)


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed store URL. Build it with :meth:`parse`.

    :param backend: the backend's name, used in every message.
    :param scheme: the URL's scheme, lower-cased.
    :param host: the host name or address (None when the URL names none).
    :param port: the port (None when the URL names none).
    :param user: the user name, unquoted.
    :param password: the password, unquoted; never show it (``shown`` masks it).
    :param path: the path, unquoted (``/statekit``).
    :param options: statekit's own options, by name.
    :param driver: the options passed through to the driver, in URL order.
    :param shown: the whole URL with its secrets masked, for messages and doctor.
    """

    backend: str
    scheme: str
    host: str | None
    port: int | None
    user: str | None
    password: str | None = field(repr=False)
    path: str
    options: dict[str, str]
    driver: list[tuple[str, str]]
    shown: str

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        backend: str,
        schemes: Collection[str],
        options: Collection[str] = (),
        driver_options: Collection[str] | Callable[[str], bool] = (),
        example: str = "",
        multi_host: bool = False,
    ) -> StoreUrl:
        """Parse ``url``; ConfigError (naming what is wrong) when it is not usable.

        :param schemes: the schemes this backend serves.
        :param options: statekit's options the backend reads (typed getters below).
        :param driver_options: option names (or a test) passed through to the driver.
        :param example: a URL shape shown when ``url`` is malformed.
        :param multi_host: accept ``host1:port1,host2:port2`` (a cluster's seed list);
            ``host`` and ``port`` are then None and the driver reads the list itself.
        """
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            several = multi_host and "," in parts.netloc.rpartition("@")[2]
            port = None if several else parts.port  # a bad port raises ValueError
            pairs = _pairs(parts.query)
        except ValueError as exc:
            expected = f"; expected {example}" if example else ""
            raise ConfigError(
                f"{backend} URL {shown!r} is malformed ({exc}){expected}", source="url"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in schemes:
            names = " or ".join(f"{s}://" for s in schemes)
            raise ConfigError(f"{shown!r} is not a {names} URL", source="url")
        if parts.fragment:
            raise ConfigError(f"{backend} URL {shown!r} has a #fragment", source="url")
        passes = driver_options if callable(driver_options) else driver_options.__contains__
        ours: dict[str, str] = {}
        driver: list[tuple[str, str]] = []
        for name, value in pairs:
            if name in options:
                if name in ours:
                    raise ConfigError(f"{backend} URL {shown!r} sets {name} twice", source="url")
                ours[name] = value
            elif passes(name):
                driver.append((name, value))
            else:
                known = ", ".join(sorted(options)) or "none"
                raise ConfigError(
                    f"unknown {backend} URL option {name!r} in {shown!r}; its options: {known}",
                    source="url",
                )
        return cls(
            backend=backend,
            scheme=scheme,
            host=None if several else parts.hostname,
            port=port,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            path=unquote(parts.path),
            options=ours,
            driver=driver,
            shown=shown,
        )

    @property
    def database(self) -> str | None:
        """The path without its leading ``/`` (None when empty): a server's database name."""
        return self.path.lstrip("/") or None

    def invalid(self, name: str, value: object, expected: str) -> ConfigError:
        """The ConfigError for option ``name`` holding ``value``, which should be ``expected``."""
        return ConfigError(
            f"{self.backend} URL {self.shown!r}: {name}={value!r} {expected}", source="url"
        )

    def text(self, name: str, default: str) -> str:
        """Option ``name`` as given, or ``default``."""
        return self.options.get(name, default)

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        """Option ``name``, which must be one of ``choices``."""
        value = self.options.get(name, default)
        if value not in choices:
            raise self.invalid(name, value, f"must be one of {', '.join(choices)}")
        return value

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        """Option ``name`` as an integer from ``minimum`` to ``maximum``."""
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.invalid(name, raw, "is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise self.invalid(name, raw, f"must be >= {minimum}{upper}")
        return value

    def seconds(
        self,
        name: str,
        default: float,
        *,
        minimum: float = 0.0,
        maximum: float | None = None,
        zero: bool = True,
    ) -> float:
        """Option ``name`` as a finite number of seconds; ``zero=False`` refuses 0."""
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self.invalid(name, raw, "is not a number of seconds") from None
        if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
            upper = f" and <= {maximum:g}" if maximum is not None else ""
            raise self.invalid(name, raw, f"must be >= {minimum:g}{upper} (finite seconds)")
        if value == 0 and not zero:
            raise ConfigError(
                f"{self.backend} URL {self.shown!r}: {name} must be > 0 seconds", source="url"
            )
        return value

    def namespace(self, default: str = DEFAULT_NAMESPACE) -> str:
        """Option ``namespace``, checked by statekit's one namespace rule."""
        return check_namespace(
            self.options.get("namespace", default), backend=self.backend, where=self.shown
        )
