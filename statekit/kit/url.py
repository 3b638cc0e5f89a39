"""Store URLs: ``scheme://user:password@host:port/database?option=value``, parsed once.

::

    url = StoreUrl.parse(text, backend="mysql", schemes=("mysql", "mariadb"),
                         options=("namespace", "pool_max", "connect_timeout"))
    url.host, url.port, url.user, url.password, url.database
    url.integer("pool_max", 10, minimum=1)        # ConfigError names the option
    url.seconds("connect_timeout", 10.0, zero=False)
    url.namespace()                               # statekit's one namespace rule
    url.driver_url()                              # the URL without statekit's options

Every problem is a :class:`~statekit.errors.ConfigError` (``source="url"``) that
names the backend, the option and the URL with its password masked: a malformed
URL or port, another scheme, a missing host (``needs_host=True``), a ``#fragment``, an
unknown option (the message lists the known ones), an option given twice or
without ``=``, a value of the wrong type or out of range (``nan`` and ``inf``
included). Options a driver understands can pass through untouched
(``driver_options``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from statekit.codec import DEFAULT_NAMESPACE, check_namespace
from statekit.errors import ConfigError
from statekit.redact import redact_url

__all__ = ["StoreUrl", "with_options"]

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _pairs(query: str) -> list[tuple[str, str | None]]:
    """The query's ``(name, value)`` pairs in order; the value is None for a part
    without ``=``."""
    pairs: list[tuple[str, str | None]] = []
    for part in query.split("&") if query else ():
        if not part:
            continue
        if "=" not in part:
            pairs.append((unquote(part.replace("+", " ")), None))
        else:
            pairs += parse_qsl(part, keep_blank_values=True, strict_parsing=False)
    return pairs


def with_options(url: str, **options: str) -> str:
    """``url`` with the given query options set (replacing any it had, the others kept in
    order): a test's fresh ``namespace``, a tool's ``create=false``. The rest of the URL
    stays as written (``postgresql:///db?host=/socket`` keeps its ``//``)."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in options]
    return f"{base}?{urlencode([*kept, *options.items()])}"


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
    :param given: the URL as given (it may hold a password: never show it).
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
    given: str = field(repr=False)

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
        needs_host: bool = False,
        multi_host: bool = False,
    ) -> StoreUrl:
        """Parse ``url``; ConfigError (naming what is wrong) when it is not usable.

        :param schemes: the schemes this backend serves.
        :param options: statekit's options the backend reads (typed getters below).
        :param driver_options: option names (or a test) passed through to the driver.
        :param example: a URL shape shown when ``url`` is malformed.
        :param needs_host: the URL must name a host.
        :param multi_host: accept ``host1:port1,host2:port2`` (a cluster's seed list);
            ``host`` and ``port`` are then None and the driver reads the list itself.
        """
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            hosts = parts.netloc.rpartition("@")[2]
            several = multi_host and "," in hosts
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
            article = "an" if backend[:1] in "aeiou" else "a"
            raise ConfigError(
                f"{shown!r} is not {article} {backend} URL: it must start with {names}",
                source="url",
            )
        if needs_host and not (hosts if multi_host else parts.hostname):
            raise ConfigError(f"{backend} URL {shown!r} names no host", source="url")
        if parts.fragment:
            raise ConfigError(f"{backend} URL {shown!r} has a #fragment", source="url")
        ours, driver = _sort(pairs, backend, shown, options, driver_options)
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
            given=url,
        )

    @property
    def database(self) -> str | None:
        """The path without its leading ``/`` (None when empty): a server's database name."""
        return self.path.lstrip("/") or None

    def driver_url(
        self, *, scheme: str | None = None, drop: Collection[str] = (), empty_path: str = ""
    ) -> str:
        """The URL for the driver: statekit's options taken out, the driver's kept in order.

        :param scheme: replaces the URL's scheme (as given otherwise).
        :param drop: driver options to leave out too (the backend passes them otherwise).
        :param empty_path: the path when the URL has none (a driver may need ``/``).

        It keeps ``scheme://`` even without a host (``postgresql://user@/db?host=/socket``)
        and holds the password: never show it.
        """
        parts = urlsplit(self.given)
        query = urlencode([(n, v) for n, v in self.driver if n not in drop])
        return f"{scheme or parts.scheme}://{parts.netloc}{parts.path or empty_path}" + (
            f"?{query}" if query else ""
        )

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

    def boolean(self, name: str, default: bool) -> bool:
        """Option ``name`` as true (``1 true yes on``) or false (``0 false no off``)."""
        raw = self.options.get(name)
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered not in _TRUE + _FALSE:
            raise self.invalid(name, raw, "must be true or false")
        return lowered in _TRUE

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


def _sort(
    pairs: list[tuple[str, str | None]],
    backend: str,
    shown: str,
    options: Collection[str],
    driver_options: Collection[str] | Callable[[str], bool],
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Statekit's options by name and the driver's in order; ConfigError for an unknown
    option, one given twice or one without ``=value``."""
    passes = driver_options if callable(driver_options) else driver_options.__contains__
    ours: dict[str, str] = {}
    driver: list[tuple[str, str]] = []
    for name, value in pairs:
        known = name in options
        if not known and not passes(name):
            listed = ", ".join(sorted(options)) or "none"
            if not callable(driver_options) and driver_options:
                listed += f"; the driver's: {', '.join(sorted(driver_options))}"
            raise ConfigError(
                f"unknown {backend} URL option {name!r} in {shown!r}; its options: {listed}",
                source="url",
            )
        if value is None:
            raise ConfigError(
                f"{backend} URL {shown!r} is malformed (option {name!r} has no '=value')",
                source="url",
            )
        if not known:
            driver.append((name, value))
        elif name in ours:
            raise ConfigError(f"{backend} URL {shown!r} sets {name} twice", source="url")
        else:
            ours[name] = value
    return ours, driver
