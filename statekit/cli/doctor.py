"""``statekit doctor``: check the configuration, the plugins and the store's backend, and
show the metrics reconciliation engines stored.

The reconciliation figures are informational: reading them imports the trading layer
only once the backend answered, and they never change the exit code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.text import Text

import statekit
from statekit.cli import output
from statekit.cli.options import Options, missing_store, options, scrub_data
from statekit.config import Settings
from statekit.errors import StatekitError
from statekit.host import PluginHost
from statekit.redact import redact_url
from statekit.store import StateStore


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
        missing = missing_store(url)  # never create the store being diagnosed
        if missing is not None:
            raise missing
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


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the backend.")
    ] = 10.0,
) -> None:
    """Check the configuration, the plugins and the configured store's backend, and show
    the metrics reconciliation engines stored.

    Secrets are never shown, and a store that does not exist is reported, never created.
    Exit codes: 0 healthy, 1 the backend is unreachable or unhealthy, the store does not
    exist, or the configuration is bad, 3 degraded: the primary is unreachable or
    the fallback journal is draining, and writes go to the journal (docs/tiered.md).
    Reconciliation metrics never change it.
    """
    opts = options(ctx)
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
    report: dict[str, Any] = scrub_data(
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


def _print_doctor(opts: Options, report: dict[str, Any]) -> None:
    opts.print(Text("Store URL: ", style="bold") + Text(report["url"]))
    opts.print(Text("Effective configuration (secrets masked):", style="bold"))
    opts.out.print_json(data=report["config"], default=output.json_default)
    plugins = report["plugins"]
    opts.print(
        Text("Plugins: ", style="bold")
        + Text(f"{len(plugins['loaded'])} loaded ({', '.join(plugins['loaded']) or 'none'}), ")
        + Text(f"{len(plugins['failed'])} failed", style="red" if plugins["failed"] else "")
    )
    for failed in plugins["failed"]:
        opts.print(Text(f"  {failed['name']} ({failed['distribution']}): {failed['error']}"))
    backend = report["backend"]
    table = output.table("backend", "ok", "latency_ms", "detail", title="Backend health")
    detail = Text("\n".join(f"{k}: {output.compact(v)}" for k, v in backend["detail"].items()))
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
        return output.short(value, 20)
    return Text(f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s")


def _age(value: Any) -> Text:
    """An ISO time and how long ago it was: a stale snapshot means no engine runs."""
    if not isinstance(value, str):
        return Text("-") if value is None else output.short(value, 40)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return output.short(value, 40)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ago = max(0.0, (datetime.now(UTC) - at).total_seconds())
    return output.when(at, "seconds") + Text(f" ({_duration(ago)} ago)", style="dim")


def _duration(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _print_reconcile(
    opts: Options, snapshots: dict[str, dict[str, Any]] | None, error: str | None
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
    table = output.table("", *scopes, title="Reconciliation")

    def row(label: str, cell: Callable[[dict[str, Any]], Text]) -> None:
        table.add_row(Text(label), *(cell(snapshots[scope]) for scope in scopes))

    def count(name: str) -> Callable[[dict[str, Any]], Text]:
        return lambda snap: output.short(snap.get(name, "-"), 20)

    def pending(snap: dict[str, Any]) -> Text:
        shown = output.short(snap.get("pending", "-"), 20)
        waiting = _is_positive(snap.get("pending"))
        if waiting:
            shown.stylize("bold red" if snap.get("last_error") else "yellow")
        return shown

    def failed(snap: dict[str, Any]) -> Text:
        shown = output.short(snap.get("failed", "-"), 20)
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
