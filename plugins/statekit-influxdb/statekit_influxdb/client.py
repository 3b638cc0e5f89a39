"""The v1 HTTP API (``/write``, ``/query``, ``/ping``) over aiohttp, errors translated here.

InfluxDB 1.x serves this API natively, 2.x through its v1 compatibility endpoints
(token auth) and 3.x as well, which makes it the portable choice. Every request of
the backend goes through :meth:`InfluxClient._send`, and every aiohttp, socket or
HTTP failure becomes a statekit error here: driver exceptions in :func:`influx_error`
(through the client's :class:`~statekit.kit.DriverGuard`), HTTP statuses in
:meth:`InfluxClient._status_error`, nowhere else.

Every request statekit sends is idempotent: a write re-sends the same points with
the same timestamps (same series + time overwrites with identical fields), a query
reads, a DELETE deletes the same range. So a request that failed on a pooled
connection the server had closed (after a restart) is sent once more on a fresh one.
"""

from __future__ import annotations

import io
import json
import ssl
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import aiohttp

from statekit.errors import BackendError, BackendUnavailable, StatekitError
from statekit.kit import DriverGuard
from statekit_influxdb.options import InfluxOptions

__all__ = ["DRIVER_ERRORS", "InfluxClient", "StatementResult", "influx_error"]

StatementResult = dict[str, Any]
"""One statement's result: ``{"series": [{"name", "tags", "columns", "values"}]}``."""

NAME = "influxdb"
_UNAVAILABLE_STATUS = frozenset({502, 503, 504})
_MAX_ERROR_TEXT = 500
_LARGE_BODY = 512 * 1024

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    TimeoutError,
    OSError,
    ValueError,
)
"""What a request may raise; each is translated by :func:`influx_error`."""


def influx_error(guard: DriverGuard, exc: BaseException, *, timeout: float) -> StatekitError | None:
    """The statekit error for an aiohttp, socket or timeout failure (None: the guard's
    default, a BackendError with the text)."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return guard.failed("TLS failed; check the certificate (ca_file=, verify=)", exc)
    if isinstance(exc, TimeoutError):
        return guard.unavailable(f"no answer within {timeout:g} s", exc)
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return guard.unavailable("cannot reach the server", exc)
    return None


class InfluxClient:
    """One server, one database: write line protocol, run InfluxQL, ping.

    :param options: the parsed URL.
    :param session: an existing ``aiohttp.ClientSession`` to use (not closed by
        :meth:`aclose`); by default the client makes and owns one.
    """

    def __init__(
        self, options: InfluxOptions, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.options = options
        self.guard = DriverGuard(
            NAME,
            options.url or options.shown,
            errors=DRIVER_ERRORS,
            translate=partial(influx_error, timeout=options.timeout),
            secrets=[s for s in (options.password, options.token) if s],
        )
        """The one place driver errors become statekit's, and the closed state."""
        self._owns_session = session is None
        self._session = session or self._new_session()
        credentials = options.credentials()
        self._auth = aiohttp.BasicAuth(*credentials) if credentials else None
        self._headers = options.headers()
        self._params = options.params()
        self._write_params = {**self._params, "precision": "n"}
        self._query_params = {**self._params, "epoch": "n"}
        self.server_version = "unknown"
        """The ``X-Influxdb-Version`` the server announced at the last ping."""

    def _new_session(self) -> aiohttp.ClientSession:
        options = self.options
        ssl_arg: ssl.SSLContext | bool = True
        if options.tls:
            if not options.verify:
                ssl_arg = False
            elif options.ca_file:
                ssl_arg = ssl.create_default_context(cafile=options.ca_file)
        timeout = aiohttp.ClientTimeout(total=options.timeout, sock_connect=options.connect_timeout)
        return aiohttp.ClientSession(
            timeout=timeout,
            connector=aiohttp.TCPConnector(ssl=ssl_arg),
            raise_for_status=False,
        )

    @property
    def closed(self) -> bool:
        return self.guard.closed

    async def aclose(self) -> None:
        """Close the session if this client made it. Twice is harmless."""
        if self.guard.close() and self._owns_session:
            await self._session.close()

    # -- the API ---------------------------------------------------------------------

    async def ping(self) -> str:
        """One round trip (``GET /ping``); returns the server's version."""
        status, headers, body = await self._send("GET", "/ping", {}, None)
        if status >= 300:
            raise self._status_error(status, body, "ping")
        self.server_version = headers.get("X-Influxdb-Version", "unknown")
        return self.server_version

    async def write(self, lines: Sequence[str]) -> None:
        """POST points (line protocol, ns timestamps) to the database."""
        if not lines:
            return
        encoded = "\n".join(lines).encode()
        # aiohttp wants large bodies as a stream (it warns about bytes over 1 MiB).
        body = io.BytesIO(encoded) if len(encoded) > _LARGE_BODY else encoded
        status, _, text = await self._send("POST", "/write", self._write_params, body)
        if status >= 300:
            raise self._status_error(status, text, f"write of {len(lines)} point(s)")

    async def query(self, statement: str, *, database: bool = True) -> list[StatementResult]:
        """Run InfluxQL (``POST /query``, times as ns); one result per statement.

        A statement the server refused raises BackendError with its text.
        :param database: send ``db``/``rp`` (off for ``CREATE DATABASE``).
        """
        params = self._query_params if database else {"epoch": "n"}
        if not database and "u" in self._params:
            params = {**params, "u": self._params["u"], "p": self._params["p"]}
        form = {"q": statement}
        status, _, text = await self._send("POST", "/query", params, form)
        if status >= 300:
            raise self._status_error(status, text, _what(statement))
        try:
            reply = json.loads(text)
            results: list[StatementResult] = reply["results"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"{self.guard.where}: {_what(statement)}: the server's reply is not "
                f"InfluxQL results: {text[:200]!r}",
                backend=NAME,
            ) from exc
        for result in results:
            if "error" in result:
                raise BackendError(
                    f"{self.guard.where}: {_what(statement)}: {result['error']}", backend=NAME
                )
        return results

    # -- requests and their errors -----------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: bytes | io.BytesIO | Mapping[str, str] | None,
    ) -> tuple[int, Mapping[str, str], str]:
        for attempt in (1, 2):
            with self.guard.calls():  # BackendError once closed; driver errors translated
                try:
                    async with self._session.request(
                        method,
                        self.options.base_url + path,
                        params=params,
                        data=body,
                        headers=self._headers,
                        auth=self._auth,
                    ) as response:
                        text = await response.text(encoding="utf-8", errors="replace")
                        return response.status, response.headers, text
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    # A pooled connection the server closed (e.g. it restarted): once more.
                    if attempt == 2 or isinstance(exc, aiohttp.ClientConnectorError):
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _status_error(self, status: int, body: str, what: str) -> BackendError:
        where = self.guard.where
        try:
            message = str(json.loads(body)["error"])
        except (ValueError, KeyError, TypeError):
            message = body.strip() or "(no error text)"
        message = message[:_MAX_ERROR_TEXT]
        if status in (401, 403):
            return BackendError(
                f"{where}: {what}: HTTP {status}, the server refused the credentials "
                f"({message}); check the URL's user:password or token=",
                backend=NAME,
            )
        if status in _UNAVAILABLE_STATUS:
            return BackendUnavailable(f"{where}: {what}: HTTP {status}: {message}", backend=NAME)
        return BackendError(f"{where}: {what}: HTTP {status}: {message}", backend=NAME)


def _what(statement: str) -> str:
    words = statement.split(None, 2)
    return "query " + " ".join(words[:2]) if words else "query"
