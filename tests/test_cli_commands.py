"""The commands and flags issue 17 added: ``--version``, shell completion, ``delete``,
``ls``, ``prune``, ``--json`` on ``put``, ``migrate`` and ``snapshot create|restore``,
``migrate``'s failures before its per-file table, and what ``--meta`` takes."""

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

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/s.db"


def run(*args: str, url: str | None = None) -> Result:
    return CliRunner().invoke(app, (["--url", url] if url else []) + list(args))


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def loaded(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def error_line(result: Result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


# -- --version and completion --------------------------------------------------------------------


def test_version() -> None:
    assert ok(run("--version")).stdout == f"statekit {statekit.__version__}\n"


def test_the_completion_script_is_printed() -> None:
    """What ``statekit --show-completion`` prints in bash. ``--show-completion`` names no
    shell: it detects the one it runs in (``sh`` under make, which has no script), so the
    test asks for bash's script through the variable that flag sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEKIT_")}
    script = subprocess.run(
        [sys.executable, "-m", "statekit.cli"],
        env={**env, "_STATEKIT_COMPLETE": "source_bash"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "_STATEKIT_COMPLETE=complete_bash" in script
    assert "complete " in script


def test_completion_lists_commands_and_the_lazy_groups() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEKIT_")}

    def complete(words: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "statekit.cli"],
            env={
                **env,
                "_STATEKIT_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split(" ")) - 1),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert {"delete", "ls", "prune", "put"} <= set(complete("statekit "))
    assert complete("statekit snap") == ["snapshot"]
    assert set(complete("statekit reconcile ")) == {"status", "metrics", "plan", "run"}


# -- put --json and --meta -------------------------------------------------------------------------


def test_put_json(url: str) -> None:
    record = loaded(run("put", "k", '{"a": 1}', "--meta", '{"by": "ana"}', "--json", url=url))
    assert (record["key"], record["version"], record["value"]) == ("k", 1, {"a": 1})
    assert record["meta"] == {"by": "ana"}
    assert record["kind"] == "state"


@pytest.mark.parametrize("meta", ['"ana"', "ana", "[1]", "{oops"])
def test_meta_hint_shows_what_is_accepted(url: str, meta: str) -> None:
    line = error_line(run("put", "k", "1", "--meta", meta, url=url))
    assert "JSON object" in line
    assert """'{"by": "ana", "note": "rebalance"}'""" in line
    assert "quote it" not in line  # a quoted string would be refused too
    # ... and the example it gives is accepted as it is written:
    ok(run("put", "k", "1", "--meta", '{"by": "ana", "note": "rebalance"}', url=url))


# -- delete ------------------------------------------------------------------------------------


def test_delete(url: str) -> None:
    ok(run("put", "k", "1", url=url))
    ok(run("put", "k", "2", url=url))
    out = ok(run("delete", "k", "--meta", '{"by": "ana"}', url=url)).stdout
    assert out.strip() == "k: deleted (version 3)"
    error_line(run("get", "k", url=url))
    history = loaded(run("history", "k", "--json", url=url))
    newest = history[0]
    assert (newest["version"], newest["deleted"], newest["meta"]) == (3, True, {"by": "ana"})
    line = error_line(run("delete", "k", url=url))
    assert "'k' has no live value" in line
    assert len(loaded(run("history", "k", "--json", url=url))) == 3  # nothing appended


def test_delete_expect_and_json(url: str) -> None:
    ok(run("put", "k", "1", url=url))
    ok(run("put", "k", "2", url=url))
    assert "expected version 1, found 2" in error_line(run("delete", "k", "--expect", "1", url=url))
    record = loaded(run("delete", "k", "--expect", "2", "--json", url=url))
    assert (record["version"], record["deleted"], record["value"]) == (3, True, None)


# -- ls ------------------------------------------------------------------------------------------


def test_ls_by_prefix_and_kind(url: str) -> None:
    ok(run("put", "position/EURUSD", '{"symbol": "EURUSD"}', "--kind", "trading.position", url=url))
    ok(run("put", "position/mine", "1", url=url))
    ok(run("put", "order/1", '{"s": "new"}', "--kind", "order", url=url))
    keys = [r["key"] for r in loaded(run("ls", "--json", url=url))]
    assert keys == ["order/1", "position/EURUSD", "position/mine"]
    under = loaded(run("ls", "position/", "--json", url=url))
    assert [r["key"] for r in under] == ["position/EURUSD", "position/mine"]
    typed = loaded(run("ls", "position/", "--kind", "trading.position", "--json", url=url))
    assert [(r["key"], r["version"], r["value"]) for r in typed] == [
        ("position/EURUSD", 1, {"symbol": "EURUSD"})
    ]
    table = ok(run("ls", "position/", url=url)).stdout
    assert "position/EURUSD" in table
    assert "trading.position" in table


def test_ls_limit_empty_and_deleted(url: str) -> None:
    for n in range(3):
        ok(run("put", f"k{n}", "1", url=url))
    ok(run("delete", "k1", url=url))
    assert [r["key"] for r in loaded(run("ls", "--json", url=url))] == ["k0", "k2"]
    assert len(loaded(run("ls", "--limit", "1", "--json", url=url))) == 1
    assert "--limit shows more" in ok(run("ls", "--limit", "1", url=url)).stdout
    assert ok(run("ls", "nothing/", url=url)).stdout.strip() == "no keys under 'nothing/'"
    assert loaded(run("ls", "nothing/", "--json", url=url)) == []
    assert run("ls", "--limit", "0", url=url).exit_code == 2


# -- prune -------------------------------------------------------------------------------------


def versions(url: str, key: str) -> list[int]:
    return [r["version"] for r in loaded(run("history", key, "--json", url=url))]


def test_prune_one_key_keeps_the_newest(url: str) -> None:
    for n in range(5):
        ok(run("put", "k", str(n), url=url))
    assert ok(run("prune", "k", "--keep-last", "2", url=url)).stdout.strip() == (
        "pruned 3 versions of 'k'"
    )
    assert versions(url, "k") == [5, 4]
    assert loaded(run("prune", "k", "--keep-last", "2", "--json", url=url)) == {"dropped": 0}
    assert loaded(run("get", "k", "--json", url=url))["value"] == 4  # the head is untouched
    assert loaded(run("prune", "k", "--before-version", "5", "--json", url=url)) == {"dropped": 1}
    assert versions(url, "k") == [5]


def test_prune_a_prefix_or_everything(url: str) -> None:
    for key in ("a/1", "a/2", "b/1"):
        for n in range(3):
            ok(run("put", key, str(n), url=url))
    assert loaded(run("prune", "--prefix", "a/", "--keep-last", "1", "--json", url=url)) == {
        "dropped": 4
    }
    assert (versions(url, "a/1"), versions(url, "b/1")) == ([3], [3, 2, 1])
    out = ok(run("prune", "--all", "--keep-last", "1", url=url)).stdout
    assert out.strip() == "pruned 2 versions of every key"
    # older than a week: everything here is newer, nothing goes
    assert loaded(run("prune", "--all", "--older-than", "7d", "--json", url=url)) == {"dropped": 0}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--keep-last", "1"), "a KEY, --prefix P or --all"),
        (("k", "--all", "--keep-last", "1"), "a KEY, --prefix P or --all"),
        (("k",), "--keep-last N, --older-than DURATION"),
        (("--all", "--older-than", "soon"), "not a duration"),
        (("--all", "--before-version", "3"), "give a KEY"),
    ],
)
def test_prune_refuses_what_it_cannot_do(url: str, args: tuple[str, ...], fragment: str) -> None:
    ok(run("put", "k", "1", url=url))
    assert fragment in error_line(run("prune", *args, url=url))


def test_prune_on_memory() -> None:
    # an empty store: nothing to drop, and no error
    assert loaded(run("prune", "--all", "--keep-last", "1", "--json", url="memory://")) == {
        "dropped": 0
    }


# -- snapshot create|restore --json -----------------------------------------------------------


def test_snapshot_create_and_restore_json(url: str) -> None:
    ok(run("put", "p/a", "1", url=url))
    info = loaded(run("snapshot", "create", "--id", "s1", "--description", "d", "--json", url=url))
    assert (info["id"], info["keys"], info["description"], info["prefix"]) == ("s1", 1, "d", "")
    assert "created_at" in info
    ok(run("put", "p/a", "2", url=url))
    assert loaded(run("snapshot", "restore", "s1", "--json", url=url)) == {
        "snapshot": "s1",
        "changed": 1,
    }
    taken = run("snapshot", "create", "--id", "s1", "--json", url=url)
    assert "exists already" in error_line(taken)


# -- migrate ---------------------------------------------------------------------------------


def write_legacy(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_migrate_json(tmp_path: Path, url: str) -> None:
    good = write_legacy(tmp_path, "good.json", '{"active_positions": {"EURUSD": {"q": 1}}}')
    report = loaded(run("migrate", str(good), "--json", url=url))
    assert (report["ok"], report["dry_run"], report["total_items"]) == (True, False, 1)
    (one,) = report["reports"]
    assert (one["successful_items"], one["failed_items"]) == (1, 0)
    assert "s.db" in one["target"]

    bad = write_legacy(tmp_path, "bad.json", '{"active_positions": {"A": {"q": NaN}, "B": {}}}')
    result = run("migrate", str(bad), "--json", url=url)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["ok"], report["failed_items"], report["total_items"]) == (False, 1, 2)
    assert report["reports"][0]["failures"][0]["item"] == "active_positions.A"
    assert result.stderr.splitlines() == ["error: 1 of 2 items failed to migrate (in the report)"]


def test_migrate_shows_totals_and_failures_before_the_files(tmp_path: Path, url: str) -> None:
    folder = tmp_path / "states"
    folder.mkdir()
    for n in range(30):
        write_legacy(folder, f"s{n:02}.json", f'{{"active_positions": {{"P{n}": {{"q": 1}}}}}}')
    write_legacy(folder, "zz.json", '{"active_positions": {"BAD": {"q": NaN}}}')
    result = run("migrate", "states", url=url)  # relative: the working directory is tmp_path
    assert result.exit_code == 1
    out = result.stdout
    assert "31 files, 31 items: 30 migrated, 1 failed" in out
    assert out.index("not migrated") < out.index("s00.json") < out.index("s29.json")
    assert out.index("1 failed") < out.index("BAD")


def test_migrate_dry_run_summary(tmp_path: Path, url: str) -> None:
    good = write_legacy(tmp_path, "good.json", '{"active_positions": {"EURUSD": {"q": 1}}}')
    out = ok(run("migrate", str(good), "--dry-run", url=url)).stdout
    assert "dry run, nothing written: 1 file, 1 items: 1 would migrate, 0 failed" in out


def test_new_commands_leave_no_store_open(url: str) -> None:
    # Each command closes its store: the file can be opened and used right after.
    ok(run("put", "k", "1", url=url))
    ok(run("ls", url=url))

    async def read() -> int:
        async with await statekit.open(url) as store:
            head = await store.get("k")
            return 0 if head is None else head.version

    assert asyncio.run(read()) == 1


def test_ls_hides_statekits_own_keys(url: str) -> None:
    ok(run("put", "k", "1", url=url))
    ok(run("snapshot", "create", "--id", "s1", url=url))
    assert [r["key"] for r in loaded(run("ls", "--json", url=url))] == ["k"]
    assert "statekit's own" in error_line(run("ls", "_sk/", url=url))


def test_migrate_dry_run_creates_no_store(tmp_path: Path) -> None:
    # Without --url the store is the file beside the source: a dry run must not create it.
    write_legacy(tmp_path, "state.json", '{"active_positions": {"EURUSD": {"q": 1}}}')
    out = ok(run("migrate", "state.json", "--dry-run")).stdout
    assert "state.statekit.db (does not exist yet)" in out
    assert "1 would migrate" in out
    assert not (tmp_path / "state.statekit.db").exists()
    report = loaded(run("migrate", "state.json", "--dry-run", "--json"))
    assert report["reports"][0]["target"].endswith("state.statekit.db (does not exist yet)")
    assert not (tmp_path / "state.statekit.db").exists()
    ok(run("migrate", "state.json"))  # the real run creates it
    assert (tmp_path / "state.statekit.db").exists()


def test_every_command_and_json_flag_is_in_docs_cli_md() -> None:
    from typer.main import get_command

    docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    headings = [line for line in docs.splitlines() if line.startswith("#")]

    def walk(group: Any, prefix: str) -> list[tuple[str, Any]]:
        # typer may run on its own copy of click: walk by duck type, not click's classes
        found = []
        for name, command in group.commands.items():
            found.append((f"{prefix}{name}", command))
            if hasattr(command, "commands"):
                found += walk(command, f"{prefix}{name} ")
        return found

    commands = walk(get_command(app), "")
    assert {"get", "put", "delete", "ls", "prune", "snapshot create", "reconcile status"} <= {
        path for path, _ in commands
    }
    for path, command in commands:
        heading = next((h for h in headings if f"`{path} " in h or f"`statekit {path} " in h), None)
        assert heading is not None, f"docs/cli.md has no heading for `statekit {path}`"
        if any("--json" in getattr(p, "opts", ()) for p in command.params):
            assert "[--json]" in heading, f"docs/cli.md's heading of {path} misses --json"
