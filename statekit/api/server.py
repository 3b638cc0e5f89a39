"""Serving the API: :func:`serve` (``statekit serve``, ``UnifiedStateManager.start_api_server``).

One implementation: a uvicorn ``Server`` on a socket bound here (so a busy port
is a clear :class:`~statekit.errors.ConfigError`, and port 0 picks a free one),
the app's lifespan (the WebSocket hub) entered around it, graceful shutdown on
cancellation or, when asked, on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import uvicorn

import statekit
from statekit.api.app import create_app, redactor_for
from statekit.config import ApiSettings, Settings
from statekit.errors import ConfigError, StatekitError
from statekit.observe.logs import json_logging_config
from statekit.redact import RedactingFilter
from statekit.store import StateStore
from statekit.trading.locks import KeyedLocks

__all__ = [
    "GRACEFUL_SHUTDOWN_SECONDS",
    "check_bind",
    "check_websockets",
    "is_loopback",
    "loop_factory",
    "serve",
    "websocket_library",
]

log = logging.getLogger("statekit.api")

GRACEFUL_SHUTDOWN_SECONDS = 10
"""How long open requests and WebSockets get to finish when the server stops."""

_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``uvicorn app:app`` would serve on: uvloop's when it is installed
    (uvicorn's ``loop="auto"``), else None (asyncio's own). For ``asyncio.Runner``."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False otherwise."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public interface


def check_bind(api: ApiSettings) -> None:
    """Refuse to expose the API beyond this machine without an API key.

    :raises ConfigError: ``api.host`` is not loopback and ``api.api_key`` is unset or empty.
    """
    key = api.api_key.get_secret_value() if api.api_key is not None else ""
    if not is_loopback(api.host) and not key:
        raise ConfigError(
            f"refusing to serve the API on {api.host}:{api.port} without an API key: "
            "anyone who can reach it could change the state. Set api.api_key "
            "(STATEKIT_API__API_KEY or config.json) or bind to 127.0.0.1",
            source="api.api_key",
        )


def websocket_library() -> str | None:
    """The WebSocket library uvicorn will use (it tries them in this order), or None.

    Without one uvicorn still serves HTTP but answers every ``/ws`` handshake with 404,
    and says nothing about it at startup.
    """
    for name in ("websockets", "wsproto"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    return None


def check_websockets() -> None:
    """Refuse to serve without a WebSocket library: ``/ws`` is part of the API.

    :raises ConfigError: neither ``websockets`` nor ``wsproto`` can be imported.
    """
    if websocket_library() is None:
        raise ConfigError(
            "no WebSocket library is installed, so WS /ws would answer 404: "
            "pip install 'statekit[api]' (it brings websockets)",
            source="api",
        )


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port``; ConfigError when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc}", source="api.host") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot serve on {host}:{port}: {reason} (choose another --port)", source="api.port"
        ) from None
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling (:func:`serve` decides), which
    says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.contextmanager
def _stop_on_signals(server: uvicorn.Server) -> Iterator[None]:
    """SIGINT/SIGTERM stop ``server`` gracefully; a second one forces it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _log_config(level: str, json_logs: bool) -> dict[str, Any]:
    if json_logs:
        return json_logging_config(level)
    return uvicorn.config.LOGGING_CONFIG


@contextlib.contextmanager
def _redacted_logs(settings: Settings) -> Iterator[None]:
    """uvicorn's log lines (paths with ``?api_key=``, errors) without secrets, while serving."""
    redacting = RedactingFilter(redactor_for(settings))
    loggers = [logging.getLogger(name) for name in _UVICORN_LOGGERS]
    for logger in loggers:
        logger.addFilter(redacting)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(redacting)


async def serve(
    settings: Settings | None = None,
    *,
    url: str | None = None,
    host: str | None = None,
    port: int | None = None,
    store: StateStore | None = None,
    locks: KeyedLocks | None = None,
    ready: Callable[[str], None] | None = None,
    handle_signals: bool = False,
    log_level: str | None = None,
    configure_logging: bool = False,
) -> None:
    """Serve the API until cancelled (or, with ``handle_signals``, until SIGINT/SIGTERM).

    Opens the store at ``url`` (default: the configured one) and closes it after,
    unless an open ``store`` is given (then it stays open). Cancelling the task
    stops the server gracefully: no new connections, open requests and WebSockets
    get :data:`GRACEFUL_SHUTDOWN_SECONDS` to finish, then CancelledError propagates.

    :param settings: default :func:`statekit.config.load_settings`; ``settings.api``
        gives the host, port, key, CORS origins and body limit.
    :param host: overrides ``api.host``; ``port`` overrides ``api.port`` (0: a free port).
    :param ready: called with the URL served (``http://127.0.0.1:8000``) once the
        server accepts connections.
    :param handle_signals: stop on SIGINT/SIGTERM (a command line); only in the main thread.
    :param log_level: uvicorn's log level (default: ``settings.log_level``).
    :param configure_logging: let uvicorn set up its log handlers (a command line);
        off, the host application's logging configuration is left alone.
    :raises ConfigError: a non-loopback host without an API key, no WebSocket library
        (:func:`check_websockets`), or the port cannot be bound.
    """
    from statekit.config import load_settings

    settings = settings or load_settings()
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if overrides:
        settings = settings.model_copy(
            update={"api": settings.api.model_copy(update=overrides)}, deep=True
        )
    if url is not None and store is None:
        settings = settings.model_copy(deep=True)
        settings.url = url  # type: ignore[assignment]  # validated into a SecretStr
    api = settings.api
    check_bind(api)
    check_websockets()
    sock = _bind(api.host, api.port)
    try:
        if store is not None:
            await _run(
                store, settings, sock, locks, ready, handle_signals, log_level, configure_logging
            )
            return
        opened = await statekit.open(url, settings=settings)
        async with opened:
            await _run(
                opened, settings, sock, locks, ready, handle_signals, log_level, configure_logging
            )
    finally:
        sock.close()


async def _run(
    store: StateStore,
    settings: Settings,
    sock: socket.socket,
    locks: KeyedLocks | None,
    ready: Callable[[str], None] | None,
    handle_signals: bool,
    log_level: str | None,
    configure_logging: bool,
) -> None:
    app = create_app(store, settings, locks=locks)
    level = (log_level or settings.log_level).lower()
    json_logs = configure_logging and settings.log_format == "json"
    config = uvicorn.Config(
        app,
        lifespan="off",  # entered below, so a failing start is an exception, not sys.exit
        log_level=level,
        log_config=_log_config(level, json_logs) if configure_logging else None,
        access_log=not json_logs,  # JSON: the API writes the access lines, with request ids
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
        ws_max_size=1024 * 1024,
        # No permessage-deflate: compressing every message once per subscriber costs the
        # fan-out its CPU, and compression hides a slow client's backlog from the
        # hub's queue bound (and mixes client-chosen with other data: CRIME-style leaks).
        ws_per_message_deflate=False,
    )
    server = _Server(config)
    url = _url(sock)
    signals = _stop_on_signals(server) if handle_signals else contextlib.nullcontext()
    with _redacted_logs(settings), signals:
        async with app.router.lifespan_context(app):
            serving = asyncio.create_task(server.serve(sockets=[sock]), name="statekit-api")
            try:
                listening = asyncio.create_task(server.listening.wait())
                try:
                    await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    listening.cancel()
                if not server.started:
                    await serving
                    raise StatekitError(f"the API server on {url} did not start (see the log)")
                log.info("statekit API on %s (%s store)", url, store.backend.name)
                if ready is not None:
                    ready(url)
                await asyncio.shield(serving)
            except asyncio.CancelledError:
                server.should_exit = True
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
                raise
