"""``statekit reconcile``: reconciliation from the shell — every intent with its status,
the engines' stored metrics, a dry-run plan, and ``run`` (engines for shards of the
intents, until stopped) (docs/cli.md).

The ``statekit`` command (:mod:`statekit.cli`) mounts :data:`reconcile_app` and imports
this module only when a reconcile command runs. It hands every command a :class:`Session`
as ``ctx.obj``: the global options, the store, error reporting and printing. This layer
asks for that shape and never imports the command line's package, which sits above it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    NoReturn,
    Protocol,
    TypeVar,
    get_type_hints,
    runtime_checkable,
)

import typer
from pydantic import PydanticSchemaGenerationError, TypeAdapter
from pydantic import ValidationError as PydanticError
from rich import box
from rich.table import Table
from rich.text import Text

from statekit.errors import ValidationError
from statekit.trading.plugin import ConnectorRegistry
from statekit.trading.reconcile.engine import ReconcileEngine, plan_table, read_metrics
from statekit.trading.reconcile.intents import IntentStore
from statekit.trading.reconcile.metrics import prometheus_text
from statekit.trading.reconcile.shards import ShardedEngines, parse_shards

if TYPE_CHECKING:
    from statekit.host import PluginHost
    from statekit.store import StateStore
    from statekit.trading.exchange import ExchangeConnector
    from statekit.trading.reconcile.base import Action
    from statekit.trading.reconcile.intents import Intent, IntentStatus

__all__ = ["HELP", "Session", "reconcile_app"]

T = TypeVar("T")

HELP = "Reconciliation: intents and statuses, engine metrics, a dry-run plan, run shards."
"""What ``statekit --help`` says about the group."""

reconcile_app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    # As the statekit command: plain tracebacks, never local variables (store URLs).
    pretty_exceptions_enable=False,
)


@runtime_checkable
class Session(Protocol):
    """What the command that mounts :data:`reconcile_app` gives each command as
    ``ctx.obj`` (``statekit.cli.options.Options`` for ``statekit``)."""

    def host(self) -> PluginHost:
        """A plugin host configured by the settings."""
        ...

    def run(self, work: Callable[[StateStore], Awaitable[T]]) -> T:
        """Open the store, run ``work`` on it in one event loop, close it."""
        ...

    def reporting(self) -> AbstractContextManager[None]:
        """Turn a StatekitError raised inside into ``fail``."""
        ...

    def fail(self, message: str) -> NoReturn:
        """Print ``error: <message>`` (secrets scrubbed) on stderr; exit 1."""
        ...

    def print(self, *items: Any) -> None:
        """Print for people on stdout."""
        ...

    def print_json(self, data: Any) -> None:
        """Plain JSON on stdout, for scripts."""
        ...


def _session(ctx: typer.Context) -> Session:
    session = ctx.obj
    assert isinstance(session, Session), "the mounting command sets ctx.obj"
    return session


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
    opts = _session(ctx)

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
    table = Table(box=box.SIMPLE_HEAD)  # the style of every statekit table
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
    opts = _session(ctx)
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
    """What builds ``host.find(ConnectorRegistry, name)(**options)``: the name and the options
    are checked now; the connector is built inside the event loop (it may open
    sessions there). Refusals become a ValidationError naming the connector and its
    options, never a secret-looking option's value."""
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
    opts = _session(ctx)
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


_CONNECTOR = typer.Option(
    "--connector", metavar="NAME", help="The exchange connector's name (paper, or a plugin's)."
)
_OPTION = typer.Option(
    "--option", metavar="KEY=VALUE", help="An argument of the connector (repeat it), as for plan."
)


@reconcile_app.command("run")
def reconcile_run(
    ctx: typer.Context,
    connector: Annotated[str, _CONNECTOR],
    option: Annotated[list[str] | None, _OPTION] = None,
    shards: Annotated[
        int, typer.Option("--shards", min=1, help="Hash shards the intents are split into.")
    ] = 1,
    own: Annotated[
        str | None,
        typer.Option("--own", metavar="I,J", help="The shards this process takes at once."),
    ] = None,
    standby: Annotated[
        bool,
        typer.Option(
            "--standby", help="Wait on every other shard's lease; take any that stops renewing."
        ),
    ] = False,
    reconciler: Annotated[
        list[str] | None,
        typer.Option(
            "--reconciler", metavar="NAME", help="A reconciler (repeat; default: orders)."
        ),
    ] = None,
    lease_ttl: Annotated[
        float, typer.Option("--lease-ttl", min=0.1, help="Seconds each shard's lease holds.")
    ] = 10.0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Keys at once per shard.")] = 4,
    owner: Annotated[str, typer.Option("--owner", help="A label stored with each lease.")] = "",
) -> None:
    """Run the reconciliation engines of shards of the intents until SIGINT or SIGTERM.

    Shard i of --shards S holds the intents whose symbol hashes to i, under the lease
    reconcile-shard-i-of-S: one active engine per shard across every process. Give
    each process --own (its shards) and start one or more with --standby (docs/reconcile.md,
    "Sharded engines"). With --shards 1 and neither, the process owns the one shard.
    Exit codes: 0 stopped by a signal (leases released), 1 a bad option or any error.
    """
    opts = _session(ctx)
    with opts.reporting():
        if own is not None:
            owned = parse_shards(own, shards)
        elif shards == 1 and not standby:
            owned = [0]
        else:
            raise ValidationError(f"--shards {shards}: give --own I,J, --standby, or both")
        host = opts.host()
        build = _connector_factory(host, connector, option or [])

        async def run(store: StateStore) -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            async with build() as exchange:
                engines = ShardedEngines(
                    store,
                    exchange,
                    shards=shards,
                    own=owned,
                    standby=standby,
                    owner=owner,
                    reconcilers=reconciler or None,
                    host=host,
                    lease_ttl=lease_ttl,
                    workers=workers,
                )
                role = f"owns {owned}" + (", standby for the rest" if standby else "")
                typer.echo(f"reconcile run: {shards} shard(s), this process {role}", err=True)
                await engines.run(stop)

        opts.run(run)
