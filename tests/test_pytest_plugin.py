"""statekit's pytest plugin in other people's projects, and what a failing contract prints.

statekit's ``pytest11`` entry point has pytest load :mod:`statekit.testing.plugin` in
every project whose environment has statekit, most of which never use the conformance
suite: it must load with statekit's own dependencies and pytest, nothing optional.
Here statekit is installed from this checkout, as a wheel, into a virtualenv with
pytest but without pytest-asyncio, and pytest runs a project of someone else's.

A failing contract test must say what it compared: pytest rewrites the asserts of
``statekit.testing``'s modules (a backend author's run, in a process of its own).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import Venv, clean_environment

SOMEONE_ELSES_TEST = """\
import importlib.util

import pytest


def test_pytest_runs_beside_statekit(pytestconfig):
    assert importlib.util.find_spec("pytest_asyncio") is None
    assert pytestconfig.pluginmanager.has_plugin("statekit")


def test_the_suite_says_what_it_needs():
    with pytest.raises(ImportError, match=r'pip install "statekit\\[testing\\]"'):
        from statekit.testing import BackendContract  # noqa: F401
"""

FORGETFUL_BACKEND_TEST = '''\
import pytest_asyncio

from statekit.backends.memory import MemoryBackend
from statekit.testing import BackendContract


class ForgetfulBackend(MemoryBackend):
    """Answers latest() with the first head asked for only."""

    async def latest(self, keys):
        heads = await super().latest(keys)
        return dict(list(heads.items())[:1])


class TestForgetfulBackend(BackendContract):
    @pytest_asyncio.fixture
    async def backend(self):
        backend = await ForgetfulBackend.open()
        yield backend
        await backend.aclose()
'''

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def _pytest(python: Path | str, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_environment(),
        check=False,
    )


@pytest.mark.slow
def test_pytest_runs_in_a_project_with_statekit_and_no_pytest_asyncio(
    venv: Venv, statekit_wheel: Path, tmp_path: Path
) -> None:
    venv.install(str(statekit_wheel), "pytest")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_theirs.py").write_text(SOMEONE_ELSES_TEST)
    ran = _pytest(venv.python, project)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 passed" in ran.stdout, ran.stdout


def test_the_worked_example_ships_in_the_wheel(statekit_wheel: Path) -> None:
    """docs/writing-a-backend.md points backend authors to it in their installed statekit."""
    names = zipfile.ZipFile(statekit_wheel).namelist()
    assert "statekit/testing/example.py" in names
    assert "statekit/testing/plugin.py" in names


def test_a_failing_contract_test_prints_the_values_it_compared(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_forgetful.py").write_text(FORGETFUL_BACKEND_TEST)
    ran = _pytest(sys.executable, tmp_path, "-k", "test_latest_of_many_keys")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "1 failed" in ran.stdout, ran.stdout
    # the values of both sides, not only the source line ("m/0" in double quotes)
    assert "assert {'m/0': 0} == {'m/0': 0, 'm/2': 2}" in ran.stdout, ran.stdout
