"""Every script in examples/ runs, as a user would run it, and says what happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_twice(script: Path, tmp_path: Path) -> None:
    # Twice: the examples must carry on from what an earlier run stored.
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip()
        assert "Traceback" not in done.stderr
    if script.name == "quickstart.py":
        assert "none lost: True" in done.stdout
        assert "diff now empty: True" in done.stdout
        assert (tmp_path / "statekit.db").exists()
