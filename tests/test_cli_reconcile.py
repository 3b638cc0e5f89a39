"""``statekit doctor``'s reconciliation section and ``statekit reconcile status|metrics|plan``.

Every store here is a SQLite file a real :class:`ReconcileEngine` has run a pass on,
with the paper exchange; the commands run in process through typer's CliRunner.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import statekit
from statekit.cli import app
from statekit.store import StateStore
from statekit.trading import Faults, OrderSide, PaperExchange
from statekit.trading.reconcile import IntentSpec, IntentStore, ReconcileEngine, read_metrics

SYMBOL = "BTC/USDT"
PRICES = '{"BTC/USDT": ["100"]}'
WIDE = {"COLUMNS": "200"}
"""Wide enough that rich never wraps a cell the tests look for."""

# One sample line of the Prometheus text format 0.0.4: name{labels} value.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{scope="(?:[^"\\]|\\.)*"\} '
    r"(?:NaN|[+-]Inf|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)$"
)


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


def run(*args: str, url: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["--url", url, *args], env={**WIDE, **(env or {})})


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def loaded(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def one_line_error(result: Result, *fragments: str) -> str:
    """Failed as every user mistake should: one line on stderr, exit 1, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def in_store(url: str, work: Callable[[StateStore], Any]) -> Any:
    async def session() -> Any:
        async with await statekit.open(url) as store:
            return await work(store)

    return asyncio.run(session())


def paper(**kwargs: Any) -> PaperExchange:
    return PaperExchange(
        prices={SYMBOL: [Decimal("100")]}, balances={"USDT": Decimal("100000")}, **kwargs
    )


def buy(intent_id: str = "i1", price: str = "90") -> Callable[[StateStore], Any]:
    spec = IntentSpec(symbol=SYMBOL, side=OrderSide.BUY, amount=Decimal("1"), price=Decimal(price))
    return lambda store: IntentStore(store).create(intent_id, spec)


def one_pass(url: str, exchange: PaperExchange) -> None:
    async def work(store: StateStore) -> None:
        engine = ReconcileEngine(store, exchange)
        try:
            await engine.run_once()
        finally:
            await engine.aclose()

    in_store(url, work)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """An existing, empty store: only ``put`` creates one (tests/test_cli_stores.py)."""
    return asyncio.run(created(f"sqlite:///{tmp_path}/s.db"))


async def created(url: str) -> str:
    async with await statekit.open(url):
        return url


@pytest.fixture
def reconciled(url: str) -> str:
    """A store with intent i1 (buy 1 BTC/USDT @ 90) after one engine pass: placed, resting."""
    in_store(url, buy("i1"))
    one_pass(url, paper())
    return url


@pytest.fixture
def failing(url: str) -> str:
    """A store whose engine could not place i1 (the exchange never answers an order)."""
    in_store(url, buy("i1"))
    one_pass(url, paper(faults=Faults(timeout_before_accept=1.0)))
    return url


def everything(url: str) -> dict[str, tuple[int, int]]:
    """Every live key with its version and the length of its history."""

    async def work(store: StateStore) -> dict[str, tuple[int, int]]:
        found = {}
        async for record in store.scan(""):
            found[record.key] = (record.version, len(await store.history(record.key)))
        return found

    result: dict[str, tuple[int, int]] = in_store(url, work)
    return result


# -- doctor ------------------------------------------------------------------------------------


def test_doctor_json_has_the_stored_snapshots(reconciled: str) -> None:
    report = loaded(run("doctor", "--json", url=reconciled))
    assert report["ok"] is True
    assert report["reconcile_error"] is None
    assert report["reconcile"] == in_store(reconciled, read_metrics)
    snap = report["reconcile"]["default"]
    assert (snap["passes"], snap["keys"], snap["pending"], snap["errors"]) == (1, 1, 0, 0)
    assert snap["last_error"] is None
    assert snap["holder"]
    assert snap["updated_at"]


def test_doctor_text_shows_a_table_per_scope(reconciled: str) -> None:
    out = ok(run("doctor", url=reconciled)).stdout
    assert "Backend health" in out
    assert "Reconciliation" in out
    table = out[out.index("Reconciliation") :]
    for label in ("default", "holder", "passes", "pending", "errors", "retries", "terminal"):
        assert label in table
    for label in ("drifts", "lag p50 / p99", "last pass", "converge", "last error", "updated"):
        assert label in table
    assert re.search(r"passes\s+1\b", table)
    assert re.search(r"pending\s+0\b", table)
    assert re.search(r"last error\s+-", table)
    assert " ago)" in table  # how old the snapshot is: a stale one means no engine runs


def test_doctor_without_an_engine(url: str) -> None:
    assert loaded(run("doctor", "--json", url=url))["reconcile"] == {}
    out = ok(run("doctor", url=url)).stdout
    assert "no reconciliation engine has run against this store" in out


def test_doctor_shows_pending_work_with_an_error_in_red(failing: str) -> None:
    report = loaded(run("doctor", "--json", url=failing))
    snap = report["reconcile"]["default"]
    assert snap["pending"] == 1
    assert "ExchangeUnavailable" in snap["last_error"]
    assert report["ok"] is True  # informational: the backend is healthy, exit 0

    colour = ok(run("doctor", url=failing, env={"FORCE_COLOR": "1", "NO_COLOR": ""})).stdout
    assert re.search(r"pending\s+\x1b\[1;31m1\x1b\[0m", colour), colour
    assert re.search(r"last error\s+\x1b\[31morders/intent:i1: ExchangeUnavailable", colour)
    plain = ok(run("doctor", url=failing)).stdout
    assert "\x1b[" not in plain  # no colour codes when not a terminal


def test_doctor_on_an_unhealthy_backend_does_not_read_metrics(tmp_path: Path) -> None:
    result = run("doctor", "--json", "--timeout", "5", url=f"nosuch:///{tmp_path}/x")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["reconcile"] is None
    assert "not healthy" in report["reconcile_error"]


# -- reconcile status --------------------------------------------------------------------------


def test_status_json(reconciled: str) -> None:
    in_store(reconciled, buy("i2", price="80"))  # no engine has seen it yet
    rows = loaded(run("reconcile", "status", "--json", url=reconciled))
    assert [row["id"] for row in rows] == ["i1", "i2"]
    first, second = rows
    assert first["symbol"] == SYMBOL
    assert (first["side"], first["type"], first["amount"], first["price"]) == (
        "buy",
        "limit",
        "1",
        "90",
    )
    assert (first["generation"], first["observed_generation"]) == (1, 1)
    assert (first["condition"], first["filled"]) == ("InSync", "0")
    assert first["reason"]
    assert first["exchange_order_id"] == "paper-1"
    assert first["deleting"] is False
    for field in ("observed_generation", "condition", "reason", "filled", "exchange_order_id"):
        assert second[field] is None, field
    assert second["generation"] == 1


def test_status_table(reconciled: str) -> None:
    in_store(reconciled, buy("i2", price="80"))
    out = ok(run("reconcile", "status", url=reconciled)).stdout
    for heading in ("id", "symbol", "side", "amount", "price", "gen", "obs", "condition"):
        assert heading in out
    for heading in ("reason", "filled", "exchange id"):
        assert heading in out
    i1 = next(line for line in out.splitlines() if line.strip().startswith("i1 "))
    assert i1.split()[:8] == ["i1", SYMBOL, "buy", "1", "90", "1", "1", "InSync"]
    assert "paper-1" in i1
    i2 = next(line for line in out.splitlines() if line.strip().startswith("i2 "))
    assert "unseen" in i2


def test_status_without_intents(url: str) -> None:
    assert ok(run("reconcile", "status", url=url)).stdout.strip() == "no intents"
    assert loaded(run("reconcile", "status", "--json", url=url)) == []


# -- reconcile metrics -------------------------------------------------------------------------


def test_metrics_json(reconciled: str) -> None:
    snapshots = loaded(run("reconcile", "metrics", url=reconciled))
    assert snapshots == in_store(reconciled, read_metrics)
    assert set(snapshots) == {"default"}
    assert snapshots["default"]["passes"] == 1


def test_metrics_prometheus(reconciled: str) -> None:
    text = ok(run("reconcile", "metrics", "--prometheus", url=reconciled)).stdout
    assert text.endswith("\n")
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) statekit_reconcile_\w+ ", line), line
            continue
        assert SAMPLE.match(line), line
        name, value = line.split(" ")
        samples[name] = value
    assert samples['statekit_reconcile_passes_total{scope="default"}'] == "1"
    assert samples['statekit_reconcile_pending{scope="default"}'] in ("0", "0.0")
    assert float(samples['statekit_reconcile_last_pass_seconds{scope="default"}']) > 0


def test_metrics_without_an_engine(url: str) -> None:
    assert loaded(run("reconcile", "metrics", url=url)) == {}
    text = ok(run("reconcile", "metrics", "--prometheus", url=url)).stdout
    assert all(line.startswith("#") for line in text.splitlines())


# -- reconcile plan ----------------------------------------------------------------------------


@pytest.fixture
def no_orders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every order the paper exchange is asked to place or cancel (a plan must ask none)."""
    calls: list[str] = []

    async def create_order(self: PaperExchange, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"create_order{args}")
        raise AssertionError("a plan placed an order")

    async def cancel_order(self: PaperExchange, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"cancel_order{args}")
        raise AssertionError("a plan cancelled an order")

    monkeypatch.setattr(PaperExchange, "create_order", create_order)
    monkeypatch.setattr(PaperExchange, "cancel_order", cancel_order)
    return calls


def test_plan_shows_the_place_and_does_nothing(url: str, no_orders: list[str]) -> None:
    in_store(url, buy("i1"))
    before = everything(url)
    args = ("reconcile", "plan", "--connector", "paper", "--option", f"prices={PRICES}")
    out = ok(run(*args, url=url)).stdout
    assert "dry run" in out
    row = next(line for line in out.splitlines() if "intent:i1" in line)
    assert "place" in row and SYMBOL in row and "i1: buy 1 BTC/USDT @ 90" in row
    actions = loaded(run(*args, "--json", url=url))
    assert actions == [
        {
            "reconciler": "orders",
            "key": "intent:i1",
            "verb": "place",
            "symbol": SYMBOL,
            "detail": "i1: buy 1 BTC/USDT @ 90",
        }
    ]
    assert no_orders == []
    assert everything(url) == before  # no status, no ledger entry, no lease, no metrics


def test_plan_with_nothing_to_do(url: str, no_orders: list[str]) -> None:
    out = ok(
        run("reconcile", "plan", "--connector", "paper", "--option", f"prices={PRICES}", url=url)
    )
    assert "nothing to do" in out.stdout
    assert no_orders == []


def test_plan_options_are_json_or_text(url: str, no_orders: list[str]) -> None:
    in_store(url, buy("i1"))
    built: list[PaperExchange] = []
    real = PaperExchange.__init__

    @functools.wraps(real)  # keeps the annotations the options are converted by
    def spy(self: PaperExchange, **kwargs: Any) -> None:
        real(self, **kwargs)
        built.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PaperExchange, "__init__", spy)
        ok(
            run(
                "reconcile",
                "plan",
                "--connector",
                "paper",
                "--option",
                'prices={"BTC/USDT": [100.5, "101"]}',
                "--option",
                'balances={"USDT": "250.25"}',
                "--option",
                "seed=7",
                "--option",
                "name=123",  # JSON 123 is not a str: the text is used
                url=url,
            )
        )
    (exchange,) = built
    assert exchange.price(SYMBOL) == Decimal("100.5")  # a Decimal, never a float
    assert isinstance(exchange.price(SYMBOL), Decimal)
    assert (exchange.seed, exchange.name) == (7, "123")


def test_plan_help_says_it_is_a_dry_run(url: str) -> None:
    out = ok(run("reconcile", "plan", "--help", url=url)).stdout
    assert "dry run" in out
    assert "Nothing is written to the store and nothing is sent to the exchange" in out


def test_plan_with_an_unknown_connector(url: str) -> None:
    result = run("reconcile", "plan", "--connector", "nope", url=url)
    one_line_error(result, "no exchange connector named 'nope'", "paper")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ((), ("'paper'", "options given (none)", "prices")),
        (('prices={"BTC/USDT": ["abc"]}',), ("'paper'", "option prices[BTC/USDT][0]", "decimal")),
        (('prices={"BTC/USDT": []}',), ("'paper'", "(prices)", "non-empty")),
        ((f"prices={PRICES}", "colour=red"), ("'paper'", "(prices, colour)", "'colour'")),
        (("prices",), ("--option 'prices' is not key=value",)),
        ((f"prices={PRICES}", f"prices={PRICES}"), ("--option prices is given twice",)),
    ],
)
def test_plan_with_bad_options(
    url: str, no_orders: list[str], options: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    in_store(url, buy("i1"))
    args = [arg for option in options for arg in ("--option", option)]
    result = run("reconcile", "plan", "--connector", "paper", *args, url=url)
    one_line_error(result, *fragments)
    assert result.stdout == ""
    assert no_orders == []


def test_plan_never_prints_a_secret_option(url: str) -> None:
    secret = "s3cret-api-key-value"
    result = run(
        "reconcile",
        "plan",
        "--connector",
        "paper",
        "--option",
        f"prices={PRICES}",
        "--option",
        f"api_key={secret}",
        url=url,
    )
    one_line_error(result, "api_key")
    assert secret not in result.output


def test_plan_with_an_unknown_reconciler(url: str) -> None:
    args = ("--connector", "paper", "--option", f"prices={PRICES}", "--reconciler", "zzz")
    one_line_error(run("reconcile", "plan", *args, url=url), "no reconciler named 'zzz'")


def test_plan_needs_a_connector(url: str) -> None:
    assert run("reconcile", "plan", url=url).exit_code == 2  # a usage error, as typer's


def test_statekit_help_lists_reconcile_without_importing_the_trading_layer() -> None:
    """The trading layer's reconcile app is mounted lazily, with the help it declares."""
    from statekit.cli import RECONCILE_HELP
    from statekit.trading.reconcile.cli import HELP

    assert RECONCILE_HELP == HELP
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from statekit.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'], env={'COLUMNS': '200'})\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'reconcile' in result.output, result.output\n"
        "print(sorted(m for m in sys.modules if m.startswith('statekit.trading')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
