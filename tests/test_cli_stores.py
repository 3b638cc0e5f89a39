"""Only ``put`` creates a store: every other command, ``doctor`` included, reports a store
that does not exist (a mistyped SQLite path) as one clear error and creates nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from statekit.cli import app

pytestmark = pytest.mark.usefixtures("isolated")  # tests/conftest.py

READ_ONLY = [
    ("get", "k"),
    ("get", "k", "--json"),
    ("history", "k"),
    ("ls",),
    ("ls", "position/", "--json"),
    ("delete", "k"),
    ("prune", "--all", "--keep-last", "1"),
    ("snapshot", "list"),
    ("snapshot", "create"),
    ("snapshot", "diff", "s1"),
    ("snapshot", "restore", "s1"),
    ("reconcile", "status"),
    ("reconcile", "metrics"),
]


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--url", url, *args])


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a))
def test_a_missing_store_is_an_error_and_is_not_created(tmp_path: Path, args: tuple[str]) -> None:
    typo = tmp_path / "statekti.db"
    result = run(f"sqlite:///{typo}", *args)
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: no store at sqlite:///")
    assert str(typo) in line
    assert "does not exist" in line
    assert not typo.exists()
    assert list(tmp_path.iterdir()) == []  # no -wal, -shm or journal either


@pytest.mark.parametrize("as_json", [False, True])
def test_doctor_on_a_mistyped_path_is_unhealthy_and_creates_nothing(
    tmp_path: Path, as_json: bool
) -> None:
    typo = tmp_path / "statekti.db"
    result = run(f"sqlite:///{typo}", "doctor", *(["--json"] if as_json else []))
    assert result.exit_code == 1, result.output
    assert not typo.exists()
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: sqlite backend unhealthy: no store at")
    if as_json:
        report = json.loads(result.stdout)
        assert report["ok"] is False
        assert "does not exist" in report["backend"]["error"]


def test_the_default_store_is_not_created_by_a_read(tmp_path: Path) -> None:
    # No --url, no settings: ./statekit.db (the working directory is tmp_path).
    result = CliRunner().invoke(app, ["get", "k"])
    assert result.exit_code == 1
    assert "statekit.db" in result.stderr
    assert not (tmp_path / "statekit.db").exists()


def test_put_creates_the_store_and_reads_then_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    assert run(url, "put", "k", "1").exit_code == 0
    assert (tmp_path / "new.db").exists()
    got = run(url, "get", "k", "--json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["value"] == 1
    assert run(url, "doctor", "--json").exit_code == 0


def test_a_bad_sqlite_url_keeps_its_own_error(tmp_path: Path) -> None:
    # The URL is checked as the backend checks it before asking whether the file exists.
    result = run("sqlite://somehost/state.db", "get", "k")
    assert result.exit_code == 1
    assert "has a host part" in result.stderr
    result = run("sqlite:///", "ls")
    assert "names no file" in result.stderr


def test_memory_is_always_there() -> None:
    result = run("memory://", "ls")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no keys"
