"""The ``statekit`` command: inspect plugins, check a store, read and write keys, snapshots,
inspect reconciliation.

Every command that touches a store runs all of its work inside one
``asyncio.run(...)`` and closes the store before returning. A user mistake or
any :class:`~statekit.errors.StatekitError` ends the command with one line,
``error: <message>``, on stderr and exit code 1; usage errors (an unknown
option, a missing argument) exit 2 as typer does. ``--json`` prints plain JSON
on stdout for scripts; everything else is for humans (rich tables).

Nothing printed may hold a secret: store URLs are shown with
:func:`statekit.codec.redact_url`, settings with ``Settings.masked()``, and the
password or token of the URL in use is scrubbed from every error message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, get_type_hints
from urllib.parse import urlsplit

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

import statekit
from statekit.backend import Record
from statekit.config import Settings, load_settings
from statekit.errors import ConfigError, ConflictError, StatekitError, ValidationError
from statekit.host import PluginHost
from statekit.redact import Redactor, redact_url
from statekit.snapshots import SNAPSHOT_PREFIX
from statekit.store import StateStore

if TYPE_CHECKING:
    from statekit.trading.exchange import ExchangeConnector
    from statekit.trading.reconcile import Action, Intent, IntentStatus

__all__ = ["app", "main"]

T = TypeVar("T")

_VALUE_WIDTH = 60
"""Values longer than this are cut in tables (``--json`` never cuts)."""

app = typer.Typer(
    name="statekit",
    help="Versioned, auditable state for trading systems: inspect and change a store.",
    no_args_is_help=True,
    add_completion=False,
    # Plain tracebacks for real bugs; rich's pretty ones can print local variables,
    # which may hold the store URL and its password.
    pretty_exceptions_enable=False,
)
snapshot_app = typer.Typer(
    help="Create, list, restore and diff snapshots of the live keys.", no_args_is_help=True
)
app.add_typer(snapshot_app, name="snapshot")
reconcile_app = typer.Typer(
    help="Inspect reconciliation: intents and their status, engine metrics, a dry-run plan.",
    no_args_is_help=True,
)
app.add_typer(reconcile_app, name="reconcile")


# -- secrets -----------------------------------------------------------------------


def _scrub(text: str, urls: list[str]) -> str:
    """``text`` with every URL in ``urls`` redacted and their secrets replaced by ``***``."""
    return Redactor(urls=urls).text(text)


def _scrub_data(data: Any, urls: list[str]) -> Any:
    """:func:`_scrub` applied to every string inside JSON-like ``data``."""
    return Redactor(urls=urls).data(data)


# -- the options every command shares -----------------------------------------------------


@dataclass
class _Options:
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
        line.append(" ".join(_scrub(message, self.urls()).split()))
        self.err.print(line, soft_wrap=True)
        raise typer.Exit(1)

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """Turn any StatekitError raised inside into the one-line error and exit 1."""
        try:
            yield
        except StatekitError as exc:
            self.fail(str(exc) or type(exc).__name__)

    def run(self, work: Callable[[StateStore], Awaitable[T]]) -> T:
        """Open the store, run ``work`` on it in one event loop, close it."""
        url, settings = self.store_url(), self.settings()

        async def session() -> T:
            store = await statekit.open(url, settings=settings)
            async with store:
                return await work(store)

        return asyncio.run(session())

    def print(self, *items: Any) -> None:
        self.out.print(*items)

    def print_json(self, data: Any) -> None:
        """Plain JSON on stdout, no colours or wrapping, for scripts."""
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))


_EMPTY_URL = (
    "{option} is empty; give a store URL (e.g. sqlite:///statekit.db or memory://), "
    "or leave the option out to use the configured store"
)


def _options(ctx: typer.Context) -> _Options:
    options = ctx.find_object(_Options)
    assert options is not None, "the app callback sets ctx.obj"
    return options


@app.callback()
def _global_options(
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
) -> None:
    """Versioned, auditable state for trading systems: inspect and change a store."""
    ctx.obj = _Options(url=url, config=config)
    if url is not None and not url.strip():
        ctx.obj.fail(_EMPTY_URL.format(option="--url"))


# -- formatting ----------------------------------------------------------------------------


def _table(*headings: str, title: str | None = None) -> Table:
    """A table for humans: light rules, so it fits narrow terminals and copies cleanly."""
    return Table(*headings, title=None if title is None else Text(title), box=box.SIMPLE_HEAD)


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _short(value: Any, width: int = _VALUE_WIDTH) -> Text:
    text = _compact(value)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return Text(text)


def _when(at: datetime, timespec: str = "auto") -> Text:
    """A time for tables, in UTC; to the microsecond by default, so it can be pasted
    into --as-of and name exactly that version."""
    return Text(at.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z"))


def _keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


def _record_json(record: Record) -> dict[str, Any]:
    return {
        "key": record.key,
        "version": record.version,
        "kind": record.kind,
        "at": record.at.isoformat(),
        "deleted": record.deleted,
        "value": record.data,
        "meta": dict(record.meta),
    }


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        shown = text if len(text) <= 40 else text[:39] + "…"
        raise ValidationError(
            f"{what} {shown!r} is not JSON; to store it as a string, quote it: "
            f"'{json.dumps(shown, ensure_ascii=False)}'",
            reason="not JSON",
        ) from None
    except RecursionError:
        raise ValidationError(f"{what} is nested too deeply to read", reason="too deep") from None


def _parse_time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"--as-of {text!r} is not an ISO 8601 time; e.g. 2024-05-01T12:00:00Z",
            reason="as_of",
        ) from None
    # A time without an offset is taken as UTC, the zone every record is stamped in.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# -- plugins and doctor -------------------------------------------------------------------------


@app.command()
def plugins(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List every plugin: where it comes from, what it registered, why it failed.

    Exit codes: 0 listed (even when some plugins failed; see doctor), 1 bad configuration.
    """
    opts = _options(ctx)
    with opts.reporting():
        infos = opts.host().plugins()
    if as_json:
        opts.print_json(_scrub_data([info.as_dict() for info in infos], opts.urls()))
        return
    table = _table("plugin", "distribution", "version", "backends", "validators", "status")
    for info in infos:
        if info.error:
            status = Text("failed: " + _scrub(info.error, opts.urls()), style="red")
        elif info.blocked:
            status = Text("blocked", style="yellow")
        else:
            status = Text("ok", style="green")
        table.add_row(
            Text(info.name),
            Text(info.distribution + (" (built-in)" if info.builtin else "")),
            Text(info.version),
            Text(", ".join(info.backends) or "-"),
            Text(", ".join(info.validators) or "-"),
            status,
        )
    opts.print(table)


def _unhealthy(url: str, error: str, started: float) -> dict[str, Any]:
    return {
        "backend": urlsplit(url).scheme or "?",
        "ok": False,
        "latency_ms": round((perf_counter() - started) * 1000, 3),
        "detail": {},
        "error": error,
    }


@dataclass
class _Reconcile:
    """What doctor learnt about reconciliation: the stored metrics snapshots by scope,
    or why they could not be read (None, None: the backend was not healthy)."""

    snapshots: dict[str, dict[str, Any]] | None = None
    error: str | None = None


async def _backend_health(
    url: str, settings: Settings, host: PluginHost, reconcile: _Reconcile
) -> dict[str, Any]:
    """Open the store, time one health round trip, read the reconciliation metrics
    (into ``reconcile``), close it; any failure of the backend becomes the report."""
    started = perf_counter()
    try:
        store = await statekit.open(url, settings=settings, host=host)
        async with store:
            health = await store.health()
            report: dict[str, Any] = {
                "backend": store.backend.name,
                "ok": health.ok,
                "latency_ms": round(health.latency_ms, 3),
                "detail": {**store.backend.describe(), **health.detail},
            }
            if health.ok:
                await _read_reconcile(store, reconcile)
    except StatekitError as exc:
        return _unhealthy(url, str(exc) or type(exc).__name__, started)
    except Exception as exc:  # doctor diagnoses: a plugin leaking a driver error is a finding
        return _unhealthy(
            url,
            f"{type(exc).__name__}: {exc} (the backend plugin let an untranslated error through)",
            started,
        )
    if not health.ok:
        report["error"] = "the backend answered but reports itself unhealthy"
    return report


async def _read_reconcile(store: StateStore, reconcile: _Reconcile) -> None:
    """The metrics snapshots every reconciliation engine stored; informational, so a
    failure to read them is noted, not raised."""
    from statekit.trading.reconcile import read_metrics

    try:
        reconcile.snapshots = await read_metrics(store)
    except StatekitError as exc:
        reconcile.error = str(exc) or type(exc).__name__


@app.command()
def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the backend.")
    ] = 10.0,
) -> None:
    """Check the configuration, the plugins and the configured store's backend, and show
    the metrics reconciliation engines stored.

    Secrets are never shown. Exit codes: 0 healthy, 1 the backend is unreachable or
    unhealthy, or the configuration is bad, 3 degraded: the primary is unreachable or
    the fallback journal is draining, and writes go to the journal (docs/tiered.md).
    Reconciliation metrics never change it.
    """
    opts = _options(ctx)
    with opts.reporting():
        settings = opts.settings()
        url = opts.store_url()
        host = opts.host()
        infos = host.plugins()

    reconcile = _Reconcile()

    async def check() -> dict[str, Any]:
        started = perf_counter()
        try:
            async with asyncio.timeout(timeout):
                return await _backend_health(url, settings, host, reconcile)
        except TimeoutError:
            return _unhealthy(url, f"no answer within {timeout:g}s", started)

    backend = asyncio.run(check())
    if reconcile.snapshots is None and reconcile.error is None:
        reconcile.error = "not read: the backend is not healthy"
    degraded = backend.get("detail", {}).get("degraded") if backend["ok"] else None
    report: dict[str, Any] = _scrub_data(
        {
            "ok": bool(backend["ok"]),
            "degraded": degraded,
            "url": redact_url(url),
            "config": settings.masked(),
            "plugins": {
                "loaded": [i.name for i in infos if not i.error],
                "failed": [i.as_dict() for i in infos if i.error],
            },
            "backend": backend,
            # Informational: what reconciliation engines stored; never changes the exit code.
            "reconcile": reconcile.snapshots,
            "reconcile_error": reconcile.error,
        },
        [*opts.urls(), url],
    )
    if as_json:
        opts.print_json(report)
    else:
        _print_doctor(opts, report)
    if not report["ok"]:
        opts.fail(f"{report['backend']['backend']} backend unhealthy: {report['backend']['error']}")
    if report["degraded"]:
        line = Text("degraded: ", style="bold yellow")
        line.append(" ".join(str(report["degraded"]).split()))
        opts.err.print(line, soft_wrap=True)
        raise typer.Exit(3)


def _print_doctor(opts: _Options, report: dict[str, Any]) -> None:
    opts.print(Text("Store URL: ", style="bold") + Text(report["url"]))
    opts.print(Text("Effective configuration (secrets masked):", style="bold"))
    opts.out.print_json(data=report["config"], default=_json_default)
    plugins = report["plugins"]
    opts.print(
        Text("Plugins: ", style="bold")
        + Text(f"{len(plugins['loaded'])} loaded ({', '.join(plugins['loaded']) or 'none'}), ")
        + Text(f"{len(plugins['failed'])} failed", style="red" if plugins["failed"] else "")
    )
    for failed in plugins["failed"]:
        opts.print(Text(f"  {failed['name']} ({failed['distribution']}): {failed['error']}"))
    backend = report["backend"]
    table = _table("backend", "ok", "latency_ms", "detail", title="Backend health")
    detail = Text("\n".join(f"{k}: {_compact(v)}" for k, v in backend["detail"].items()))
    if backend.get("error"):
        detail = Text(backend["error"], style="red")
    table.add_row(
        Text(backend["backend"]),
        Text("yes", style="green") if backend["ok"] else Text("NO", style="bold red"),
        Text(f"{backend['latency_ms']:.1f}"),
        detail,
    )
    opts.print(table)
    _print_reconcile(opts, report["reconcile"], report["reconcile_error"])


def _seconds(value: Any) -> Text:
    """A duration for people: ms below a second."""
    if value is None:
        return Text("-")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _short(value, 20)
    return Text(f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s")


def _age(value: Any) -> Text:
    """An ISO time and how long ago it was: a stale snapshot means no engine runs."""
    if not isinstance(value, str):
        return Text("-") if value is None else _short(value, 40)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return _short(value, 40)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ago = max(0.0, (datetime.now(UTC) - at).total_seconds())
    return _when(at, "seconds") + Text(f" ({_duration(ago)} ago)", style="dim")


def _duration(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _print_reconcile(
    opts: _Options, snapshots: dict[str, dict[str, Any]] | None, error: str | None
) -> None:
    """Doctor's reconciliation section: one column per scope, one row per figure."""
    if snapshots is None:
        opts.print(Text("Reconciliation: ", style="bold") + Text(error or "", style="yellow"))
        return
    if not snapshots:
        opts.print(
            Text("Reconciliation: ", style="bold")
            + Text("no reconciliation engine has run against this store")
        )
        return
    scopes = sorted(snapshots)
    table = _table("", *scopes, title="Reconciliation")

    def row(label: str, cell: Callable[[dict[str, Any]], Text]) -> None:
        table.add_row(Text(label), *(cell(snapshots[scope]) for scope in scopes))

    def count(name: str) -> Callable[[dict[str, Any]], Text]:
        return lambda snap: _short(snap.get(name, "-"), 20)

    def pending(snap: dict[str, Any]) -> Text:
        shown = _short(snap.get("pending", "-"), 20)
        waiting = _is_positive(snap.get("pending"))
        if waiting:
            shown.stylize("bold red" if snap.get("last_error") else "yellow")
        return shown

    def failed(snap: dict[str, Any]) -> Text:
        shown = _short(snap.get("failed", "-"), 20)
        if _is_positive(snap.get("failed")):
            shown.stylize("red")
        return shown

    def last_error(snap: dict[str, Any]) -> Text:
        message = snap.get("last_error")
        if not message:
            return Text("-")
        style = "red" if _is_positive(snap.get("pending")) else "yellow"
        return Text(str(message), style=style)

    row("holder", lambda snap: Text(str(snap.get("holder") or "-")))
    for name in ("passes", "keys"):
        row(name, count(name))
    row("pending", pending)
    row("failed", failed)
    for name in ("errors", "retries", "terminal", "drifts"):
        row(name, count(name))
    row(
        "lag p50 / p99",
        lambda snap: (
            _seconds(snap.get("lag_p50_seconds"))
            + Text(" / ")
            + _seconds(snap.get("lag_p99_seconds"))
        ),
    )
    row("last pass", lambda snap: _seconds(snap.get("last_pass_seconds")))
    row("converge", lambda snap: _seconds(snap.get("converge_seconds")))
    row("last error", last_error)
    row("updated", lambda snap: _age(snap.get("updated_at")))
    opts.print(table)


def _is_positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


# -- reconcile ---------------------------------------------------------------------------------

_CONDITION_STYLES = {
    "InSync": "green",
    "Pending": "yellow",
    "Drifted": "yellow",
    "Failed": "bold red",
    "Unknown": "red",
}
_SECRET_OPTION = re.compile(r"key|secret|password|passphrase|token|auth", re.IGNORECASE)
"""Connector options whose values never appear in an error message."""


_STATUS_FIELDS = (
    "observed_generation",
    "condition",
    "reason",
    "message",
    "filled",
    "exchange_order_id",
    "last_error",
    "since",
    "synced_at",
)
"""What ``reconcile status --json`` says about an intent's status: null until seen."""


def _intent_row(intent: Intent, status: IntentStatus | None) -> dict[str, Any]:
    """One intent with its status, as ``reconcile status --json`` prints it; the
    status fields are null until an engine has looked at the intent."""
    spec = intent.spec
    row: dict[str, Any] = {
        "id": intent.id,
        "symbol": spec.symbol,
        "side": spec.side.value,
        "type": spec.type.value,
        "amount": str(spec.amount),
        "price": None if spec.price is None else str(spec.price),
        "time_in_force": spec.time_in_force.value,
        "oco_group": spec.oco_group,
        "generation": intent.generation,
        "deleting": intent.deleting,
    }
    if status is None:
        return row | dict.fromkeys(_STATUS_FIELDS)
    return row | {
        "observed_generation": status.observed_generation,
        "condition": status.condition.value,
        "reason": status.reason,
        "message": status.message,
        "filled": str(status.filled),
        "exchange_order_id": status.exchange_order_id,
        "last_error": status.last_error,
        "since": status.since.isoformat(),
        "synced_at": None if status.synced_at is None else status.synced_at.isoformat(),
    }


@reconcile_app.command("status")
def reconcile_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List every intent with what the engine last recorded about it (from the store only).

    Exit codes: 0 listed (also when there are none), 1 any error.
    """
    from pydantic import ValidationError as PydanticError

    from statekit.trading.reconcile import IntentStore

    opts = _options(ctx)

    async def read(store: StateStore) -> list[dict[str, Any]]:
        intents = IntentStore(store)
        try:
            statuses = await intents.statuses()
            return [_intent_row(i, statuses.get(i.id)) for i in await intents.all()]
        except PydanticError as exc:
            raise ValidationError(
                f"an intent or intent status in the store does not parse: {exc.errors()[0]['msg']}",
                reason="unreadable",
            ) from None

    with opts.reporting():
        rows = opts.run(read)
    if as_json:
        opts.print_json(rows)
        return
    if not rows:
        opts.print("no intents")
        return
    # Eleven columns: tighter padding than other tables, and only the reason may be
    # cut on a narrow terminal, never an id, an amount or a condition.
    table = _table()
    table.collapse_padding, table.pad_edge = True, False
    for heading in ("id", "symbol", "side", "amount", "price", "gen", "obs", "condition"):
        table.add_column(heading, no_wrap=True)
    table.add_column("filled", no_wrap=True)
    table.add_column("exchange id", no_wrap=True)
    table.add_column("reason", overflow="ellipsis")
    for row in rows:
        ident = Text(row["id"])
        if row["deleting"]:
            ident.append(" (deleting)", style="dim")
        condition = row["condition"]
        table.add_row(
            ident,
            Text(row["symbol"]),
            Text(row["side"]),
            Text(row["amount"]),
            Text(row["price"] or "market"),
            Text(str(row["generation"])),
            _or_dash(row["observed_generation"]),
            Text(condition, style=_CONDITION_STYLES.get(condition, ""))
            if condition
            else Text("unseen", style="dim"),
            _or_dash(row["filled"]),
            _or_dash(row["exchange_order_id"]),
            _or_dash(row["reason"]),
        )
    opts.print(table)


def _or_dash(value: Any) -> Text:
    return Text("-" if value is None or value == "" else str(value))


@reconcile_app.command("metrics")
def reconcile_metrics(
    ctx: typer.Context,
    prometheus: Annotated[
        bool,
        typer.Option("--prometheus", help="Print the Prometheus text format (0.0.4) instead."),
    ] = False,
) -> None:
    """Print every scope's stored engine metrics as JSON ({scope: snapshot}).

    Exit codes: 0 printed (also when no engine has run: {}), 1 any error.
    """
    from statekit.trading.reconcile import prometheus_text, read_metrics

    opts = _options(ctx)
    with opts.reporting():
        snapshots = opts.run(read_metrics)
    if prometheus:
        try:
            text = prometheus_text(snapshots)
        except (TypeError, ValueError) as exc:
            opts.fail(f"a stored metrics snapshot is not numeric where it must be: {exc}")
        typer.echo(text, nl=False)
        return
    opts.print_json(snapshots)


def _option_values(options: list[str]) -> dict[str, tuple[str, Any]]:
    """``--option key=value`` pairs: key -> (the text, the value as JSON, else the text).

    JSON numbers with a fraction become Decimal, never float (money is Decimal).
    """
    found: dict[str, tuple[str, Any]] = {}
    for option in options:
        key, sep, text = option.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValidationError(
                f"--option {option!r} is not key=value (e.g. --option seed=7)", reason="option"
            )
        if key in found:
            raise ValidationError(f"--option {key} is given twice", reason="option")
        try:
            value: Any = json.loads(text, parse_float=Decimal, parse_constant=Decimal)
        except json.JSONDecodeError:
            value = text
        except RecursionError:
            raise ValidationError(f"--option {key} is nested too deeply", reason="option") from None
        found[key] = (text, value)
    return found


def _connector_options(cls: type[Any], options: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """The options as the connector's ``__init__`` annotates them: the JSON value when it
    validates against the parameter's type (strings become Decimal where a Decimal is
    expected), else the text as typed; unannotated parameters get the JSON value."""
    from pydantic import PydanticSchemaGenerationError, TypeAdapter
    from pydantic import ValidationError as PydanticError

    try:
        hints = get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: pass the values as parsed
        hints = {}
    built: dict[str, Any] = {}
    for key, (text, value) in options.items():
        hint = hints.get(key)
        try:
            adapter: TypeAdapter[Any] | None = None if hint is None else TypeAdapter(hint)
        except (PydanticSchemaGenerationError, TypeError):
            adapter = None
        if adapter is None:
            built[key] = value
            continue
        problem: PydanticError | None = None
        for candidate in (value, text) if value is not text else (value,):
            try:
                built[key] = adapter.validate_python(candidate)
                break
            except PydanticError as exc:
                problem = problem or exc
        else:
            assert problem is not None
            first = problem.errors()[0]
            where = "".join(f"[{part}]" for part in first["loc"])
            raise ValueError(f"option {key}{where}: {first['msg']}")
    return built


def _connector_factory(
    host: PluginHost, name: str, options: list[str]
) -> Callable[[], ExchangeConnector]:
    """What builds ``host.connector_class(name)(**options)``: the name and the options
    are checked now; the connector is built inside the event loop (it may open
    sessions there). Refusals become a ValidationError naming the connector and its
    options, never a secret-looking option's value."""
    from statekit.trading.plugin import ConnectorRegistry

    cls = host.find(ConnectorRegistry, name)
    given = _option_values(options)

    def refused(exc: Exception) -> ValidationError:
        message = str(exc) or type(exc).__name__
        for key, (text, value) in given.items():
            if _SECRET_OPTION.search(key):
                for secret in sorted({text, str(value)}, key=len, reverse=True):
                    if secret:
                        message = message.replace(secret, "***")
        return ValidationError(
            f"cannot build the exchange connector {name!r} ({cls.__name__}) with the "
            f"options given ({', '.join(given) or 'none'}): {message}",
            reason="connector options",
        )

    try:
        arguments = _connector_options(cls, given)
    except ValueError as exc:
        raise refused(exc) from None

    def build() -> ExchangeConnector:
        try:
            return cls(**arguments)
        except (TypeError, ValueError) as exc:
            raise refused(exc) from None

    return build


@reconcile_app.command("plan")
def reconcile_plan(
    ctx: typer.Context,
    connector: Annotated[
        str,
        typer.Option(
            "--connector",
            metavar="NAME",
            help="The exchange connector's name (paper, or one a plugin registers).",
        ),
    ],
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            metavar="KEY=VALUE",
            help="An argument of the connector (repeat it): the value is read as JSON when it "
            'parses, else as text, e.g. --option prices=\'{"BTC/USDT": ["100"]}\'.',
        ),
    ] = None,
    reconciler: Annotated[
        list[str] | None,
        typer.Option(
            "--reconciler",
            metavar="NAME",
            help="A reconciler to plan with (repeat it; default: orders).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Show what a reconciliation pass would do now: a dry run.

    Nothing is written to the store and nothing is sent to the exchange: the engine
    only reads the intents and statuses and asks the exchange what it holds. Exit
    codes: 0 planned (also when there is nothing to do), 1 an unknown connector or
    reconciler, options the connector refuses, or any error.
    """
    from statekit.trading.reconcile import ReconcileEngine, plan_table

    opts = _options(ctx)
    with opts.reporting():
        host = opts.host()
        build = _connector_factory(host, connector, option or [])

        async def plan(store: StateStore) -> list[Action]:
            async with build() as exchange:
                engine = ReconcileEngine(store, exchange, reconcilers=reconciler or None, host=host)
                return await engine.plan()

        actions = opts.run(plan)
    if as_json:
        opts.print_json([dataclasses.asdict(action) for action in actions])
        return
    opts.print(plan_table(actions, title="reconcile plan (dry run: nothing written or sent)"))


# -- keys ------------------------------------------------------------------------------------


@app.command()
def get(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key to read.")],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="ISO 8601 time: the record current then (no offset = UTC).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show the live record of KEY: value, version, kind, time and meta.

    Exit codes: 0 found, 1 missing key (or deleted, or no value at --as-of) or any error.
    """
    opts = _options(ctx)
    with opts.reporting():
        at = _parse_time(as_of) if as_of else None
        record = opts.run(lambda store: store.get(key, as_of=at))
    if record is None:
        when = f" at {at.isoformat()}" if at else ""
        opts.fail(f"key {key!r} has no live value{when}")
    if as_json:
        opts.print_json(_record_json(record))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("key", Text(record.key))
    table.add_row("version", Text(str(record.version)))
    table.add_row("kind", Text(record.kind))
    table.add_row("at", _when(record.at))
    table.add_row("meta", Text(_compact(dict(record.meta))))
    table.add_row("value", Text(json.dumps(record.data, indent=2, ensure_ascii=False)))
    opts.print(table)


@app.command()
def put(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key to write.")],
    value: Annotated[
        str, typer.Argument(help="The new value as JSON text: 42, '\"text\"', '{\"qty\": 1}'.")
    ],
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="What the value is (default: the key's kind, else state)."),
    ] = None,
    expect: Annotated[
        int | None,
        typer.Option(
            "--expect",
            min=0,
            help="Write only if the head version is N (0 = only if the key has no live value).",
        ),
    ] = None,
    meta: Annotated[
        str | None, typer.Option("--meta", help='JSON object about the change: \'{"user":"ana"}\'.')
    ] = None,
) -> None:
    """Store VALUE (JSON) as the new version of KEY and print that version.

    Exit codes: 0 stored, 1 bad JSON, a failed --expect (conflict), a refused value or any error.
    """
    opts = _options(ctx)
    with opts.reporting():
        data = _parse_json(value, "VALUE")
        changes: Any = {} if meta is None else _parse_json(meta, "--meta")
        if not isinstance(changes, dict):
            raise ValidationError(
                f'--meta must be a JSON object, e.g. \'{{"user":"ana"}}\', not {meta!r}',
                reason="meta",
            )

        async def write(store: StateStore) -> Record:
            # Without --kind the key keeps its kind, as store.update() and delete() do.
            current = None if kind is not None else await store.get(key)
            return await store.put(
                key,
                data,
                kind=kind or (current.kind if current else "state"),
                meta=changes,
                expect=statekit.ANY if expect is None else expect,
            )

        record = opts.run(write)
    opts.print(Text(f"{record.key}: version {record.version}"))


@app.command()
def history(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key whose versions to list.")],
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N versions.")] = 20,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="Start from version 1 instead of the newest.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the versions of KEY (deletions included), newest first.

    Exit codes: 0 listed, 1 the key has no history or any error.
    """
    opts = _options(ctx)
    with opts.reporting():
        records = opts.run(
            lambda store: store.history(key, limit=limit, newest_first=not oldest_first)
        )
    if not records:
        opts.fail(f"key {key!r} has no history")
    if as_json:
        opts.print_json([_record_json(r) for r in records])
        return
    table = _table("version", title=f"history of {key}")
    table.add_column("at", no_wrap=True, min_width=27)
    for heading in ("kind", "value", "meta"):
        table.add_column(heading)
    for r in records:
        shown = Text("(deleted)", style="dim") if r.deleted else _short(r.data)
        table.add_row(Text(str(r.version)), _when(r.at), Text(r.kind), shown, _short(dict(r.meta)))
    opts.print(table)


# -- snapshots ---------------------------------------------------------------------------------


@snapshot_app.command("create")
def snapshot_create(
    ctx: typer.Context,
    description: Annotated[
        str, typer.Option("--description", help="What the snapshot is for.")
    ] = "",
    prefix: Annotated[str, typer.Option("--prefix", help="Capture only keys under it.")] = "",
    snapshot_id: Annotated[
        str | None, typer.Option("--id", help="The snapshot id (default: time + random).")
    ] = None,
) -> None:
    """Capture every live key (under --prefix) and print the snapshot id.

    Exit codes: 0 created, 1 the id exists already or any error.
    """
    opts = _options(ctx)
    with opts.reporting():
        try:
            info = opts.run(
                lambda store: store.snapshots.create(
                    description, prefix=prefix, snapshot_id=snapshot_id
                )
            )
        except ConflictError as exc:
            if exc.key != SNAPSHOT_PREFIX + (snapshot_id or ""):
                raise
            opts.fail(f"snapshot {snapshot_id!r} exists already; choose another --id")
    opts.print(Text(f"snapshot {info.id}: {_keys(info.keys)}"))


@snapshot_app.command("list")
def snapshot_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List every snapshot, oldest first.

    Exit codes: 0 listed (also when there are none), 1 any error.
    """
    opts = _options(ctx)
    with opts.reporting():
        infos = opts.run(lambda store: store.snapshots.list())
    if as_json:
        opts.print_json([info.as_dict() for info in infos])
        return
    if not infos:
        opts.print("no snapshots")
        return
    table = _table()
    # Ids are typed back in (restore, diff): keep each on one line, never cut one.
    longest = max(len(info.id) for info in infos)
    table.add_column("id", min_width=min(longest, 40), overflow="fold")
    table.add_column("created", no_wrap=True, min_width=20)
    for heading in ("keys", "prefix", "description"):
        table.add_column(heading)
    for info in infos:
        table.add_row(
            Text(info.id),
            _when(info.created_at, "seconds"),
            Text(str(info.keys)),
            Text(info.prefix),
            Text(info.description),
        )
    opts.print(table)


@snapshot_app.command("restore")
def snapshot_restore(
    ctx: typer.Context,
    snapshot_id: Annotated[str, typer.Argument(metavar="ID", help="The snapshot to restore.")],
) -> None:
    """Make the live keys under the snapshot's prefix equal to snapshot ID.

    Restoring appends new versions (and deletions), so it is in the history and can be
    undone by restoring an earlier snapshot. Exit codes: 0 restored, 1 unknown snapshot
    or any error.
    """
    opts = _options(ctx)
    with opts.reporting():
        changed = opts.run(lambda store: store.snapshots.restore(snapshot_id))
    opts.print(Text(f"restored snapshot {snapshot_id}: {_keys(changed)} changed"))


@snapshot_app.command("diff")
def snapshot_diff(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(metavar="A", help="The snapshot to compare from.")],
    b: Annotated[
        str | None,
        typer.Argument(metavar="B", help="The snapshot to compare to (default: the live state)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {added, removed, changed} as JSON.")
    ] = False,
) -> None:
    """Show what changed from snapshot A to snapshot B, or to the live state.

    Exit codes: 0 compared (also when nothing differs), 1 unknown snapshot or any error.
    """
    opts = _options(ctx)
    with opts.reporting():
        diff = opts.run(lambda store: store.snapshots.diff(a, b))
    if as_json:
        opts.print_json(diff.as_dict())
        return
    if not diff:
        opts.print(Text(f"no differences between {a} and {b or 'the live state'}"))
        return
    table = _table("", title=f"{a} → {b or 'live'}")
    table.add_column("key", overflow="fold")
    table.add_column("before")
    table.add_column("after")
    rows: list[tuple[str, Text, Text, Text]] = []
    rows += [(k, Text("+", style="green"), Text(""), _short(v)) for k, v in diff.added.items()]
    rows += [(k, Text("-", style="red"), _short(v), Text("")) for k, v in diff.removed.items()]
    rows += [
        (k, Text("~", style="yellow"), _short(old), _short(new))
        for k, (old, new) in diff.changed.items()
    ]
    for key, mark, before, after in sorted(rows, key=lambda row: row[0]):
        table.add_row(mark, Text(key), before, after)
    opts.print(table)


# -- migrate ---------------------------------------------------------------------------------


def _legacy_files(path: Path) -> int:
    """How many legacy files ``statekit migrate`` reads at ``path`` (for the progress bar)."""
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".json")
    return 1


@app.command()
def migrate(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="Legacy TradingStateManager JSON files, or folders of them (*.json).",
            show_default=False,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and compare only: write nothing.")
    ] = False,
    backup: Annotated[
        bool,
        typer.Option("--backup", help="Copy each file to <name>.bak beside it before migrating."),
    ] = False,
) -> None:
    """Migrate legacy JSON state files into the store, with a report.

    Into --url or the configured store, else the SQLite file beside each PATH
    (state.json -> state.statekit.db; a folder -> <folder>/statekit.db). A folder's
    files are migrated oldest first. Sources are never modified; running again
    changes nothing. Exit codes: 0 every item migrated (or would), 1 an item failed,
    a PATH does not exist, or any error.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from statekit.compat.legacy_state import LegacyState, settings_for
    from statekit.compat.migration import MigrationReport, migrate_source

    opts = _options(ctx)
    with opts.reporting():
        for path in paths:
            if not path.exists():
                opts.fail(f"{path}: no such file or folder")
        base = opts.settings()
        if opts.url:
            base = base.model_copy(deep=True)
            base.url = opts.url  # type: ignore[assignment]  # validated into a SecretStr
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=opts.err,
            transient=True,
            disable=not opts.err.is_terminal,  # no bar in logs and pipes
        )
        task = progress.add_task("migrating", total=sum(_legacy_files(p) for p in paths))

        def advance(part: MigrationReport) -> None:
            progress.update(task, advance=1, description=Path(part.source).name)

        async def work() -> list[MigrationReport]:
            reports: list[MigrationReport] = []
            for path in paths:
                legacy = LegacyState(settings_for(path, base))
                try:
                    await legacy.open()
                    reports.append(
                        await migrate_source(
                            legacy, path, dry_run=dry_run, backup=backup, on_file=advance
                        )
                    )
                finally:
                    await legacy.aclose()
            return reports

        with progress:
            reports = asyncio.run(work())
    _print_migration(opts, reports, dry_run)
    failed = sum(r.failed_items for r in reports)
    if failed:
        total = sum(r.total_items for r in reports)
        opts.fail(f"{failed} of {total} items failed to migrate (listed above)")


def _print_migration(opts: _Options, reports: list[Any], dry_run: bool) -> None:
    files = [part for r in reports for part in (r.files or [r])]
    for store in dict.fromkeys(part.target for part in files):
        line = Text("store: ", style="bold") + Text(_scrub(store, opts.urls()))
        opts.out.print(line, soft_wrap=True)
    title = "migration (dry run: nothing written)" if dry_run else "migration"
    table = _table("source", "items", "ok", "failed", "written", "same", "deleted", title=title)
    table.add_column("note")
    for part in files:
        notes = ["already migrated"] if part.already_migrated else []
        if part.backup:
            notes.append(f"backup {Path(part.backup).name}")
        table.add_row(
            Text(part.source),
            Text(str(part.total_items)),
            Text(str(part.successful_items)),
            Text(str(part.failed_items), style="red" if part.failed_items else ""),
            Text(str(part.written)),
            Text(str(part.unchanged)),
            Text(str(part.deleted)),
            Text(", ".join(notes)),
        )
    opts.print(table)
    failures = [(part.source, f) for part in files for f in part.failures]
    if failures:
        problems = _table("source", "item", "reason", title="not migrated")
        for source, failure in failures:
            problems.add_row(Text(source), Text(failure.item), Text(failure.reason))
        opts.print(problems)


# -- serve -----------------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface to bind (default: api.host, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="Port (default: api.port, 8000)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", help="Store URL to serve (default: --url, else the configured store)."
        ),
    ] = None,
) -> None:
    """Serve the REST + WebSocket API over the store until Ctrl-C (docs/api.md).

    Binds 127.0.0.1 unless told otherwise; any other address needs api.api_key.
    Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 bad configuration (e.g. a public
    --host without an API key, a busy port) or a store that cannot be opened.
    """
    opts = _options(ctx)
    if store is not None:
        if not store.strip():
            opts.fail(_EMPTY_URL.format(option="--store"))
        opts.url = store
    with opts.reporting():
        try:
            from statekit.api import serve as serve_api
        except ImportError as exc:
            raise ConfigError(
                f"the API needs the api extra: pip install 'statekit[api]' ({exc})",
                source="api",
            ) from None
        url, settings = opts.store_url(), opts.settings()

        def ready(address: str) -> None:
            # One unwrapped line: scripts read it to learn the address.
            typer.echo(f"serving {address} (store {redact_url(url)}); Ctrl-C to stop")

        with suppress(KeyboardInterrupt):  # a Ctrl-C before the server took the signals
            asyncio.run(
                serve_api(
                    settings,
                    url=url,
                    host=host,
                    port=port,
                    ready=ready,
                    handle_signals=True,
                    configure_logging=True,
                )
            )
    opts.print(Text("stopped"))


def main() -> None:
    """Entry point of the ``statekit`` console script."""
    app(prog_name="statekit")


if __name__ == "__main__":
    main()
