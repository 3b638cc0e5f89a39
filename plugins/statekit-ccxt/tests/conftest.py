"""A recorded-response double of Binance spot's REST API, under real ccxt exchange objects.

The tests use real ``ccxt.async_support.binance`` objects: ccxt's own request
signing, parsing and error mapping run as they do against the venue. Only
the socket is replaced: the exchange is given :class:`RecordedBinance` as its
aiohttp session (ccxt's ``session`` setting), so ccxt's ``fetch`` runs in
full, including its handling of HTTP status codes and of timeouts. Each test
scripts the requests it expects, in order, with the answer to each: a JSON
body from ``fixtures/binance/`` (written from Binance's API documentation, see
its README), a status code, or an exception raised where the socket would.

CI has no network: nothing here opens a connection.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from statekit_ccxt import CcxtConnector

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
SETTINGS: dict[str, Any] = {
    "apiKey": API_KEY,
    "secret": SECRET,
    "enableRateLimit": False,  # no throttling sleeps in tests
    "timeout_on_exit": 0,  # ccxt sleeps this long (ms) in close()
    "options": {
        "fetchCurrencies": False,  # a private call (needs no answer here)
        "fetchMargins": False,  # margin pairs: private calls too
        "fetchMarkets": {"types": ["spot"]},
        # What CcxtConnector sets on the exchanges it builds, so that fetch_open_orders()
        # asks for every symbol; an exchange passed in needs it set by its builder.
        "fetchOpenOrders": {"warnWithoutSymbol": False},
    },
}


def recorded(name: str, **changes: Any) -> Any:
    """The JSON of ``fixtures/binance/<name>.json``, with top-level ``changes``."""
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    if changes:
        data = {**copy.deepcopy(data), **changes}
    return data


@dataclass
class Request:
    """One HTTP request as ccxt sent it."""

    method: str
    path: str
    params: dict[str, str]
    """The query (GET, DELETE) or the form body (POST), decoded."""
    headers: dict[str, str]
    payload: str
    """The query string or body as sent, ``signature`` included."""

    @property
    def signed(self) -> bool:
        """Signed as Binance checks it: HMAC-SHA256 of everything before ``&signature=``."""
        text, _, signature = self.payload.rpartition("&signature=")
        expected = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
        return bool(signature) and hmac.compare_digest(signature, expected)


@dataclass
class Reply:
    """An HTTP answer: a JSON body and a status."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(
        default_factory=lambda: {"Content-Type": "application/json;charset=UTF-8"}
    )


Answer = Reply | BaseException | Callable[[Request], "Reply | BaseException"]


class _Response:
    """What ccxt reads of an aiohttp response."""

    def __init__(self, reply: Reply) -> None:
        self.status = reply.status
        self.reason = HTTPStatus(reply.status).phrase
        self.headers = dict(reply.headers)
        self._text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)

    async def text(self, errors: str = "strict") -> str:
        return self._text


class _Exchange:
    """``async with session.get(...) as response``: one request and its scripted answer."""

    def __init__(self, venue: RecordedBinance, request: Request) -> None:
        self._venue, self._request = venue, request

    async def __aenter__(self) -> _Response:
        answer = self._venue.answer(self._request)
        if isinstance(answer, BaseException):
            raise answer
        return _Response(answer)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class RecordedBinance:
    """Binance spot's REST API as ccxt's aiohttp session sees it: scripted answers.

    ``expect(method, path, answer)`` queues what the next request must be and what
    it gets; an answer may be a function of the request (it can assert on it). A
    request not expected is answered with HTTP 500 and noted in ``problems``;
    :meth:`check` (run after each test) fails on problems and on expectations
    never met. ``GET /api/v3/exchangeInfo`` (the markets) is always answered.
    """

    headers: dict[str, str] = {}  # the session's default headers (none)

    def __init__(self) -> None:
        self._script: deque[tuple[str, str, Answer]] = deque()
        self.requests: list[Request] = []
        self.problems: list[str] = []

    def expect(self, method: str, path: str, answer: Answer) -> None:
        self._script.append((method, path, answer))

    @staticmethod
    def recorded(name: str, **changes: Any) -> Any:
        """The JSON of ``fixtures/binance/<name>.json``, with top-level ``changes``."""
        return recorded(name, **changes)

    @staticmethod
    def reply(name: str, *, status: int = 200, **changes: Any) -> Reply:
        """A reply carrying the recording ``name`` (with ``changes``) and ``status``."""
        return Reply(recorded(name, **changes), status=status)

    @staticmethod
    def json(body: Any, *, status: int = 200) -> Reply:
        """A reply carrying ``body`` as JSON."""
        return Reply(body, status=status)

    @staticmethod
    def raw(body: str, *, status: int, content_type: str = "text/html") -> Reply:
        """A reply with a body that is not JSON (a proxy's error page)."""
        return Reply(body, status=status, headers={"Content-Type": content_type})

    def sent(self, method: str, path: str) -> list[Request]:
        """The requests sent to ``method path``, in order."""
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def check(self) -> None:
        assert not self.problems, self.problems
        assert not self._script, f"expected but never sent: {[s[:2] for s in self._script]}"

    def answer(self, request: Request) -> Reply | BaseException:
        if (request.method, request.path) == ("GET", "/api/v3/exchangeInfo"):
            return Reply(recorded("exchange_info"))
        self.requests.append(request)
        if not self._script:
            self.problems.append(f"unexpected {request.method} {request.path} {request.params}")
            return Reply({"code": -1, "msg": "not scripted"}, status=500)
        method, path, answer = self._script.popleft()
        if (method, path) != (request.method, request.path):
            self.problems.append(f"expected {method} {path}, got {request.method} {request.path}")
            return Reply({"code": -1, "msg": "not scripted"}, status=500)
        if callable(answer) and not isinstance(answer, BaseException):
            return answer(request)
        return answer

    # -- the aiohttp.ClientSession API that ccxt's fetch uses ------------------------------

    def _call(self, method: str, url: object, data: object, headers: object) -> _Exchange:
        parts = urlsplit(str(url))
        body = data.decode() if isinstance(data, bytes) else ""
        payload = body if method in ("POST", "PUT") else parts.query
        request = Request(
            method=method,
            path=parts.path,
            params=dict(parse_qsl(payload, keep_blank_values=True)),
            headers=dict(headers) if isinstance(headers, dict) else {},
            payload=payload,
        )
        return _Exchange(self, request)

    def get(self, url: object, *, data: object = None, headers: object = None, **_: object) -> Any:
        return self._call("GET", url, data, headers)

    def post(self, url: object, *, data: object = None, headers: object = None, **_: object) -> Any:
        return self._call("POST", url, data, headers)

    def delete(
        self, url: object, *, data: object = None, headers: object = None, **_: object
    ) -> Any:
        return self._call("DELETE", url, data, headers)

    def put(self, url: object, *, data: object = None, headers: object = None, **_: object) -> Any:
        return self._call("PUT", url, data, headers)

    async def close(self) -> None:
        return None


@pytest.fixture
def venue() -> Iterator[RecordedBinance]:
    """The scripted venue; checked after the test."""
    venue = RecordedBinance()
    yield venue
    venue.check()


@pytest_asyncio.fixture
async def binance(venue: RecordedBinance) -> AsyncIterator[Any]:
    """A real ``ccxt.async_support.binance`` with its markets loaded from the recorded
    exchangeInfo, talking to :class:`RecordedBinance`; closed after the test."""
    exchange = ccxt_async.binance({**SETTINGS, "session": venue})
    try:
        await exchange.load_markets()
        yield exchange
    finally:
        await exchange.close()


@pytest_asyncio.fixture
async def connector(binance: Any) -> AsyncIterator[CcxtConnector]:
    """A connector over :func:`binance` (which it does not own: the fixture closes it)."""
    async with CcxtConnector(exchange=binance) as connector:
        yield connector
