"""The options every ``statekit`` command shares, and how a command reports an error.

``--url`` and ``--config`` go before the command; :func:`global_options` keeps them in
an :class:`Options` as ``ctx.obj`` and every command reads it back with :func:`options`.
Only a command that writes may create a store: :meth:`Options.run` refuses a store
that does not exist yet (:func:`missing_store`) unless told ``create=True``, so a
mistyped path is an error, never a new empty database.
A user mistake or any :class:`~statekit.errors.StatekitError` ends a command with one
line, ``error: <message>``, on stderr and exit code 1 (:meth:`Options.fail`,
:meth:`Options.reporting`). Nothing printed may hold a secret: the password or token of
every URL in use is scrubbed with :mod:`statekit.redact`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.text import Text

import statekit
from statekit.backends.sqlite_driver import parse_url
from statekit.cli.output import json_default
from statekit.config import Settings, load_settings
from statekit.errors import NotFound, StatekitError
from statekit.host import PluginHost
from statekit.redact import Redactor
from statekit.store import StateStore

T = TypeVar("T")

EMPTY_URL = (
    "{option} is empty; give a store URL (e.g. sqlite:///statekit.db or memory://), "
    "or leave the option out to use the configured store"
)


def missing_store(url: str) -> NotFound | None:
    """Why the store at ``url`` cannot be read because it does not exist, or None.

    Only an SQLite file can be missing here: opening one creates it, which a command that
    only reads must not do. A server's database is created by whoever runs the server
    (opening it fails when it is absent), and ``memory://`` is always there, empty.
    """
    if urlsplit(url).scheme.lower() != "sqlite":
        return None
    shown, path = parse_url(url)  # a URL the backend would refuse fails as it would
    if Path(path).exists():
        return None
    return NotFound(
        f"no store at {shown.shown}: the file {Path(path).absolute()} does not exist "
        "(nothing was created); check --url / STATEKIT_URL, or write a first key "
        "with `statekit put` to create it",
        key=shown.shown,
        what="store",
    )


def scrub(text: str, urls: list[str]) -> str:
    """``text`` with every URL in ``urls`` redacted and their secrets replaced by ``***``."""
    return Redactor(urls=urls).text(text)


def scrub_data(data: Any, urls: list[str]) -> Any:
    """:func:`scrub` applied to every string inside JSON-like ``data``."""
    return Redactor(urls=urls).data(data)


@dataclass
class Options:
    """What the global options said, and the settings once loaded (per invocation)."""

    url: str | None
    config: Path | None
    out: Console = field(default_factory=lambda: Console(highlight=False))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    _settings: Settings | None = None

    def settings(self) -> Settings:
        """The effective settings (``--config`` file, env, defaults); ConfigError when bad."""
        if self._settings is None:
            self._settings = load_settings(str(self.config) if self.config else None)
            # The command line is an application: it may set up logging, as configured.
            logging.basicConfig(level=self._settings.log_level, format="%(levelname)s %(message)s")
        return self._settings

    def store_url(self) -> str:
        """``--url`` / ``STATEKIT_URL``, else the configured store URL.

        ``--url ""`` is kept: opening it is an error, not a silent fall back to the default.
        """
        return self.settings().store_url() if self.url is None else self.url

    def urls(self) -> list[str]:
        """Every URL whose secrets must never be printed."""
        urls = [self.url] if self.url else []
        if self._settings is not None:
            # When no URL can be built from the settings, there is no secret in one either.
            with suppress(StatekitError):
                urls.append(self._settings.store_url())
        return urls

    def host(self) -> PluginHost:
        """A plugin host configured by the settings."""
        return PluginHost.from_settings(self.settings())

    def fail(self, message: str) -> NoReturn:
        """Print ``error: <message>`` (secrets scrubbed) as one line on stderr; exit 1."""
        line = Text("error: ", style="bold red")
        line.append(" ".join(scrub(message, self.urls()).split()))
        self.err.print(line, soft_wrap=True)
        raise typer.Exit(1)

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """Turn any StatekitError raised inside into the one-line error and exit 1."""
        try:
            yield
        except StatekitError as exc:
            self.fail(str(exc) or type(exc).__name__)

    def run(self, work: Callable[[StateStore], Awaitable[T]], *, create: bool = False) -> T:
        """Open the store, run ``work`` on it in one event loop, close it.

        :param create: whether a store that does not exist yet may be created (only
            ``put`` does); otherwise a missing store is a :class:`NotFound`.
        """
        url, settings = self.store_url(), self.settings()
        missing = None if create else missing_store(url)
        if missing is not None:
            raise missing

        async def session() -> T:
            store = await statekit.open(url, settings=settings)
            async with store:
                return await work(store)

        return asyncio.run(session())

    def print(self, *items: Any) -> None:
        """Print for people (rich renderables) on stdout."""
        self.out.print(*items)

    def print_json(self, data: Any) -> None:
        """Plain JSON on stdout, no colours or wrapping, for scripts."""
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=json_default))


def options(ctx: typer.Context) -> Options:
    """The :class:`Options` of this invocation (set by :func:`global_options`)."""
    found = ctx.find_object(Options)
    assert found is not None, "the app callback sets ctx.obj"
    return found


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"statekit {statekit.__version__}")
        raise typer.Exit()


def global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="STATEKIT_URL",
            show_envvar=True,
            help="Store URL, e.g. sqlite:///state.db or memory:// "
            "(default: the configured URL, else sqlite:///statekit.db).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Path of a config.json to read settings from."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            expose_value=False,
            help="Print statekit's version and exit.",
        ),
    ] = False,
) -> None:
    """Versioned, auditable state for trading systems: inspect and change a store."""
    ctx.obj = Options(url=url, config=config)
    if url is not None and not url.strip():
        ctx.obj.fail(EMPTY_URL.format(option="--url"))
