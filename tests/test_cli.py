"""The ``statekit`` command: each command's happy path, its failures, and no secret printed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import statekit
from statekit.cli import app

SECRET = "hunter2-s3cret"


pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


@pytest.fixture
def url(tmp_path: Path) -> str:
    """An existing, empty store: only ``put`` creates one (tests/test_cli_stores.py)."""
    return asyncio.run(created(f"sqlite:///{tmp_path}/s.db"))


async def created(url: str) -> str:
    async with await statekit.open(url):
        return url


def run(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> Result:
    argv = (["--url", url] if url else []) + list(args)
    return CliRunner().invoke(app, argv, env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def loaded(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def one_line_error(result: Result, *fragments: str) -> str:
    """The command failed the way every user mistake should: one line, exit 1, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception  # nothing uncaught
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# -- put / get ---------------------------------------------------------------------------------


def test_put_then_get(url: str) -> None:
    assert ok(run("put", "position/EURUSD", '{"qty": 3}', url=url)).stdout.strip() == (
        "position/EURUSD: version 1"
    )
    assert "version 2" in ok(run("put", "position/EURUSD", '{"qty": 5}', url=url)).stdout

    record = loaded(run("get", "position/EURUSD", "--json", url=url))
    assert record["key"] == "position/EURUSD"
    assert record["value"] == {"qty": 5}
    assert record["version"] == 2
    assert record["kind"] == "state"
    assert record["meta"] == {}
    assert record["at"].endswith("+00:00")

    human = ok(run("get", "position/EURUSD", url=url)).stdout
    assert '"qty": 5' in human
    assert "version" in human


def test_put_kind_meta_and_expect(url: str) -> None:
    ok(run("put", "order/1", '"new"', "--kind", "order", "--expect", "0", url=url))
    ok(run("put", "order/1", '"filled"', "--expect", "1", "--meta", '{"user": "ana"}', url=url))
    record = loaded(run("get", "order/1", "--json", url=url))
    assert (record["value"], record["version"], record["meta"]) == ("filled", 2, {"user": "ana"})
    assert record["kind"] == "order"  # without --kind, the key keeps its kind
    ok(run("put", "order/1", '"archived"', "--kind", "archive", url=url))
    assert loaded(run("get", "order/1", "--json", url=url))["kind"] == "archive"
    ok(run("put", "fresh", "1", url=url))
    assert loaded(run("get", "fresh", "--json", url=url))["kind"] == "state"


def test_put_bare_word_is_not_json(url: str) -> None:
    line = one_line_error(run("put", "note", "hello", url=url), "not JSON")
    assert """'"hello"'""" in line  # the suggestion shows how to quote it
    one_line_error(run("get", "note", url=url))  # nothing was stored


def test_put_bad_meta(url: str) -> None:
    one_line_error(run("put", "k", "1", "--meta", "[1, 2]", url=url), "--meta", "JSON object")
    one_line_error(run("put", "k", "1", "--meta", "{oops", url=url), "--meta", "not JSON")


def test_put_conflict_with_expect(url: str) -> None:
    ok(run("put", "k", "1", url=url))
    one_line_error(run("put", "k", "2", "--expect", "0", url=url), "conflict", "found 1")
    one_line_error(run("put", "k", "2", "--expect", "7", url=url), "expected version 7")
    assert loaded(run("get", "k", "--json", url=url))["value"] == 1


def test_put_refused_by_the_store(url: str) -> None:
    one_line_error(run("put", "_sk/mine", "1", url=url), "reserved")
    one_line_error(run("put", "k", "null", url=url), "delete")


def test_get_missing_key(url: str) -> None:
    result = run("get", "nope", url=url)
    one_line_error(result, "'nope'")
    assert result.stdout == ""
    assert run("get", "nope", "--json", url=url).stdout == ""


def test_get_as_of(url: str) -> None:
    ok(run("put", "k", '"first"', url=url))
    first = loaded(run("get", "k", "--json", url=url))
    ok(run("put", "k", '"second"', url=url))
    then = loaded(run("get", "k", "--as-of", first["at"], "--json", url=url))
    assert (then["value"], then["version"]) == ("first", 1)
    zulu = first["at"].replace("+00:00", "Z")
    assert loaded(run("get", "k", "--as-of", zulu, "--json", url=url))["version"] == 1
    one_line_error(run("get", "k", "--as-of", "2001-01-01", url=url), "no live value at")
    one_line_error(run("get", "k", "--as-of", "yesterday", url=url), "ISO 8601")


def test_values_are_not_rich_markup(url: str) -> None:
    ok(run("put", "[red]k", '"[bold]x[/bold]"', url=url))
    out = ok(run("get", "[red]k", url=url)).stdout
    assert "[bold]x[/bold]" in out
    assert "[red]k" in out


# -- history -----------------------------------------------------------------------------------


def test_history(url: str) -> None:
    for n in range(1, 4):
        ok(run("put", "k", json.dumps({"n": n}), "--meta", '{"by": "bot"}', url=url))
    newest = loaded(run("history", "k", "--json", url=url))
    assert [r["version"] for r in newest] == [3, 2, 1]
    assert newest[0]["value"] == {"n": 3}
    oldest = loaded(run("history", "k", "--oldest-first", "--limit", "2", "--json", url=url))
    assert [r["version"] for r in oldest] == [1, 2]

    table = ok(run("history", "k", url=url)).stdout
    assert '{"n":2}' in table
    assert '{"by":"bot"}' in table


def test_history_truncates_long_values_in_the_table(url: str) -> None:
    ok(run("put", "k", json.dumps("x" * 500), url=url))
    table = ok(run("history", "k", url=url)).stdout
    assert "x" * 500 not in table
    assert "…" in table
    assert loaded(run("history", "k", "--json", url=url))[0]["value"] == "x" * 500


def test_history_of_missing_key(url: str) -> None:
    one_line_error(run("history", "nope", url=url), "no history")


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshot_create_list_diff_restore(url: str) -> None:
    ok(run("put", "pos/a", "1", url=url))
    ok(run("put", "pos/b", "2", url=url))
    out = ok(run("snapshot", "create", "--id", "s1", "--description", "before", url=url)).stdout
    assert "s1" in out
    assert "2 keys" in out

    listed = loaded(run("snapshot", "list", "--json", url=url))
    assert [(s["id"], s["description"], s["keys"]) for s in listed] == [("s1", "before", 2)]
    assert "before" in ok(run("snapshot", "list", url=url)).stdout

    ok(run("put", "pos/a", "10", url=url))
    ok(run("put", "pos/c", "3", url=url))
    diff = loaded(run("snapshot", "diff", "s1", "--json", url=url))
    assert diff == {
        "added": {"pos/c": 3},
        "removed": {},
        "changed": {"pos/a": {"before": 1, "after": 10}},
    }
    table = ok(run("snapshot", "diff", "s1", url=url)).stdout
    assert "pos/a" in table
    assert "pos/c" in table

    ok(run("snapshot", "create", "--id", "s2", url=url))
    between = loaded(run("snapshot", "diff", "s1", "s2", "--json", url=url))
    assert between["changed"] == {"pos/a": {"before": 1, "after": 10}}
    assert "no differences" in ok(run("snapshot", "diff", "s2", url=url)).stdout

    assert "2 keys changed" in ok(run("snapshot", "restore", "s1", url=url)).stdout
    assert loaded(run("get", "pos/a", "--json", url=url))["value"] == 1
    one_line_error(run("get", "pos/c", url=url))  # created after s1: deleted by the restore


def test_snapshot_prefix(url: str) -> None:
    ok(run("put", "pos/a", "1", url=url))
    ok(run("put", "ord/a", "1", url=url))
    ok(run("snapshot", "create", "--id", "p", "--prefix", "pos/", url=url))
    (info,) = loaded(run("snapshot", "list", "--json", url=url))
    assert (info["prefix"], info["keys"]) == ("pos/", 1)


def test_snapshot_list_empty(url: str) -> None:
    assert loaded(run("snapshot", "list", "--json", url=url)) == []
    assert "no snapshots" in ok(run("snapshot", "list", url=url)).stdout


def test_snapshot_id_taken(url: str) -> None:
    ok(run("snapshot", "create", "--id", "s1", url=url))
    one_line_error(run("snapshot", "create", "--id", "s1", url=url), "'s1'", "exists")


@pytest.mark.parametrize("args", [("restore", "ghost"), ("diff", "ghost"), ("diff", "s1", "ghost")])
def test_unknown_snapshot(url: str, args: tuple[str, ...]) -> None:
    ok(run("snapshot", "create", "--id", "s1", url=url))
    one_line_error(run("snapshot", *args, url=url), "no snapshot 'ghost'")


# -- where the store is, and configuration ------------------------------------------------------


def test_unknown_scheme_lists_installed_ones() -> None:
    line = one_line_error(run("get", "k", url="nosuch://somewhere"), "'nosuch'")
    assert "memory" in line
    assert "sqlite" in line


def test_url_from_environment(url: str) -> None:
    ok(run("put", "k", "1", env={"STATEKIT_URL": url}))
    assert loaded(run("get", "k", "--json", url=url))["value"] == 1


def test_corrupt_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"url": "sqlite:///x.db",,,')
    one_line_error(run("--config", str(config), "plugins"))


def test_usage_errors_exit_2(url: str) -> None:
    assert run("put", "k", url=url).exit_code == 2
    assert run("history", "k", "--limit", "0", url=url).exit_code == 2
    assert run("put", "k", "1", "--expect", "-1", url=url).exit_code == 2
    assert run("frobnicate", url=url).exit_code == 2


# -- plugins and doctor -----------------------------------------------------------------------


@pytest.fixture
def third_party_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution with one working plugin and one that cannot be imported."""
    site = tmp_path / "site"
    dist = site / "fake_statekit_plugins-1.2.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-statekit-plugins\nVersion: 1.2\n"
    )
    (dist / "entry_points.txt").write_text(
        "[statekit]\ngood = statekit_cli_test_goodplug\nbroken = statekit_cli_test_no_such_module\n"
    )
    (site / "statekit_cli_test_goodplug.py").write_text(
        "from statekit import hookimpl\n\n"
        "@hookimpl\n"
        "def statekit_register_validators(registry):\n"
        "    registry.add('order', lambda key, data: None)\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "statekit_cli_test_goodplug", raising=False)


def test_plugins_json_lists_builtins() -> None:
    plugins = {p["name"]: p for p in loaded(run("plugins", "--json"))}
    assert plugins["memory"]["backends"] == ["memory"]
    assert plugins["sqlite"]["backends"] == ["sqlite"]
    assert plugins["sqlite"]["distribution"] == "statekit"
    assert plugins["sqlite"]["error"] is None


def test_plugins_table() -> None:
    out = ok(run("plugins")).stdout
    assert "memory" in out
    assert "sqlite" in out


@pytest.mark.usefixtures("third_party_plugins")
def test_plugins_show_third_party_and_failures() -> None:
    plugins = {p["name"]: p for p in loaded(run("plugins", "--json"))}
    good, broken = plugins["good"], plugins["broken"]
    assert (good["distribution"], good["version"]) == ("fake-statekit-plugins", "1.2")
    assert good["validators"] == ["order"]
    assert good["error"] is None
    assert "statekit_cli_test_no_such_module" in broken["error"]
    assert "failed" in ok(run("plugins")).stdout


@pytest.mark.usefixtures("third_party_plugins")
def test_doctor_reports_failed_plugins(url: str) -> None:
    report = loaded(run("doctor", "--json", url=url))
    assert [p["name"] for p in report["plugins"]["failed"]] == ["broken"]
    assert "good" in report["plugins"]["loaded"]


def test_blocked_plugin_from_environment() -> None:
    env = {"STATEKIT_BLOCKED_PLUGINS": "memory", "STATEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    plugins = loaded(run("plugins", "--json", env=env))
    assert [(p["name"], p["blocked"]) for p in plugins] == [
        ("sqlite", False),
        ("tiered", False),
        ("trading", False),
        ("memory", True),
    ]


def test_doctor_healthy(url: str) -> None:
    report = loaded(run("doctor", "--json", url=url))
    assert report["ok"] is True
    assert report["url"] == url
    assert report["backend"]["backend"] == "sqlite"
    assert report["backend"]["ok"] is True
    assert report["backend"]["latency_ms"] >= 0
    assert report["backend"]["detail"]["schema_version"] == 1
    assert "max_value_bytes" in report["config"]
    human = ok(run("doctor", url=url)).stdout
    assert "sqlite" in human
    assert "Backend health" in human


@pytest.mark.parametrize(
    "secret_url",
    [
        f"postgresql://trader:{SECRET}@127.0.0.1:1/state",  # no such backend, or no server
        f"sqlite://trader:{SECRET}@dbhost/state.db",  # sqlite refuses a host, naming the URL
        f"sqlite:///state.db?token={SECRET}",  # sqlite refuses the option
    ],
)
@pytest.mark.parametrize("as_json", [True, False])
def test_doctor_never_prints_the_secret(secret_url: str, as_json: bool) -> None:
    args = ["doctor", "--timeout", "5"] + (["--json"] if as_json else [])
    result = run(*args, url=secret_url)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert SECRET not in result.output
    assert "***" in result.stdout
    one_line_error(result, "unhealthy")
    if as_json:
        report = json.loads(result.stdout)
        assert report["ok"] is False
        assert report["backend"]["ok"] is False
        assert report["backend"]["error"]


def test_doctor_masks_a_configured_password() -> None:
    # From the environment, not --url: the settings hold it too, and must show it masked.
    secret_url = f"sqlite://trader:{SECRET}@dbhost/state.db"
    result = run("doctor", "--json", env={"STATEKIT_URL": secret_url})
    assert result.exit_code == 1
    assert SECRET not in result.output
    assert json.loads(result.stdout)["url"] == "sqlite://trader:***@dbhost/state.db"


def test_doctor_masks_a_password_from_legacy_settings() -> None:
    env = {"TRADING_STATE_DB_TYPE": "postgresql", "TRADING_STATE_POSTGRES_PASSWORD": SECRET}
    result = run("doctor", "--json", "--timeout", "5", env=env)
    assert result.exit_code == 1
    assert SECRET not in result.output
    report = json.loads(result.stdout)
    assert report["url"].startswith("postgresql://postgres:***@")
    assert SECRET not in json.dumps(report["config"])


def test_errors_never_print_the_secret() -> None:
    result = run("get", "k", url=f"sqlite://trader:{SECRET}@dbhost/state.db")
    one_line_error(result, "trader:***@dbhost")
    assert SECRET not in result.output


# -- the real console script ------------------------------------------------------------------


def test_console_script_end_to_end(tmp_path: Path, url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATEKIT_", "TRADING_"))}

    def statekit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "statekit.cli", "--url", url, *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
            check=False,
        )

    put = statekit("put", "position/BTCUSD", '{"qty": "0.5"}')
    assert (put.returncode, put.stdout.strip()) == (0, "position/BTCUSD: version 1"), put.stderr
    assert put.stderr == ""  # no warnings, no log noise
    got = statekit("get", "position/BTCUSD", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["value"] == {"qty": "0.5"}

    missing = statekit("get", "position/ETHUSD")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: key 'position/ETHUSD' has no live value"
    assert "Traceback" not in missing.stderr

    usage = statekit("put", "k")
    assert usage.returncode == 2


def test_doctor_exits_3_when_degraded(tmp_path: Path) -> None:
    """No server on port 1, a fallback journal configured: the store opens on the journal,
    and doctor says degraded (exit 3), not unreachable (1) nor healthy (0)."""
    pytest.importorskip("statekit_postgres")
    env = {
        "STATEKIT_ENABLE_FILE_FALLBACK": "true",
        "STATEKIT_FALLBACK_PATH": str(tmp_path / "fb.db"),
    }
    result = run("doctor", "--json", url="postgresql://trader@127.0.0.1:1/state", env=env)
    assert result.exit_code == 3, (result.exit_code, result.output)
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert "unavailable" in report["degraded"]
    assert report["backend"]["detail"]["fallback"]["primary"] == "not opened"
    assert result.stderr.startswith("degraded: ")
