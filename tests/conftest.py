"""Fixtures shared by the core's tests (plugins' tests get theirs from statekit.testing).

- ``isolated``: no statekit settings from the developer's environment (every
  ``STATEKIT_*`` and ``TRADING_STATE_*`` variable is removed) and the test's
  ``tmp_path`` as working directory, so no config file of the repository is found. A
  module whose every test needs it says ``pytestmark = pytest.mark.usefixtures("isolated")``.
- ``store_kind`` -> ``store_url`` -> ``store``: a fresh, empty store per test on each kind
  of backend: ``memory``, ``sqlite`` (a file in ``tmp_path``) and ``postgres`` (a fresh
  namespace on the test server, dropped after the test; skipped locally / failed under
  CI=true without the server). A module that runs on fewer kinds overrides ``store_kind``::

      @pytest.fixture(params=["sqlite", "postgres"])
      def store_kind(request: pytest.FixtureRequest) -> str:
          return str(request.param)

  and a single test can ``@pytest.mark.parametrize("store_kind", [...])``. ``store_url``
  alone serves tests whose other processes open the same store.
- ``build_distribution``, ``statekit_wheel`` and ``venv``: any distribution of this
  checkout built as a release builds it (wheel and sdist, once per run), the core's wheel,
  and a virtualenv of the test's own to install it into, as a user would.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import pytest_asyncio

import statekit
from statekit import StateStore
from statekit.testing import fresh_namespace, in_ci, server_url
from statekit.trading.exchange import ExchangeOrder
from statekit.trading.reconcile import IntentStatus, IntentStore

REPO = Path(__file__).resolve().parents[1]
PIP_TIMEOUT = 600
"""Seconds for one pip command: building the wheel, or installing into a virtualenv."""
UNREACHABLE = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "Could not fetch URL",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found",
)
"""What pip prints when it cannot reach the package registry (or find a pin there)."""


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No settings from the developer's environment or the repository's files."""
    for name in list(os.environ):
        if name.startswith(("STATEKIT_", "TRADING_STATE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which backend the test's store is on; modules override it to run on fewer."""
    return str(request.param)


def _with_namespace(url: str, namespace: str) -> str:
    glue = "&" if urlsplit(url).query else "?"
    return url + glue + urlencode({"namespace": namespace})


async def _drop_postgres(url: str) -> None:
    from statekit_postgres import PostgresBackend

    async with await PostgresBackend.open(url) as backend:
        await backend.drop_namespace(forget=True)


@contextmanager
def fresh_store_url(kind: str, folder: Path, tag: str = "t") -> Iterator[str]:
    """A URL of a fresh, empty store of ``kind`` (``memory``, ``sqlite``: a file in
    ``folder``, ``postgres``: a namespace ``<tag>_...`` on the test server, dropped when
    the block ends)."""
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{folder / 'state.db'}"
    elif kind == "postgres":
        url = _with_namespace(server_url("postgres"), fresh_namespace(tag))
        try:
            yield url
        finally:
            asyncio.run(_drop_postgres(url))
    else:
        raise ValueError(f"no store of kind {kind!r}")


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """:func:`fresh_store_url` of ``store_kind``: every process of the test can open it
    (but ``memory://``, which each open makes anew)."""
    tag = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    with fresh_store_url(store_kind, tmp_path, tag) as url:
        yield url


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[StateStore]:
    """``statekit.open(store_url)``, closed after the test."""
    async with await statekit.open(store_url) as opened:
        yield opened


def clean_environment() -> dict[str, str]:
    """This process's environment without statekit settings, pytest options or this
    virtualenv, for a process that must see only what it was given."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("STATEKIT_", "TRADING_STATE_", "PYTEST_", "VIRTUAL_ENV"))
        and name.upper() != "PYTHONPATH"
    }


def _pip(*args: str, python: Path | None = None) -> subprocess.CompletedProcess[str]:
    """This environment's pip (driving ``python``'s environment when given), checked:
    when the package registry cannot be reached it skips locally and fails under CI."""
    target = ["--python", str(python)] if python is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", *target, *args],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        env=clean_environment(),
        check=False,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    if done.returncode != 0 and any(sign in output for sign in UNREACHABLE):
        message = f"pip cannot reach the package registry:\n{output}"
        if in_ci():
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    assert done.returncode == 0, output
    return done


@dataclass(frozen=True)
class Built:
    """One distribution of this checkout as a release builds it: its wheel and sdist."""

    name: str
    wheel: Path
    sdist: Path


def _build(name: str, folder: Path) -> Built:
    """``python -m build`` of distribution ``name`` ("statekit" or a plugins/ folder),
    from a copy of what it is built from (a build writes into its source folder)."""
    source = folder / name
    if name == "statekit":
        source.mkdir()
        for file in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy2(REPO / file, source / file)
        tree = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / "statekit", source / "statekit", ignore=tree)
    else:
        tree = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
        shutil.copytree(REPO / "plugins" / name, source, ignore=tree)
    # No isolation: the build requirement (setuptools>=77) is the dev extra's, checked by
    # build, instead of a fresh environment installed for each of the eight builds.
    command = [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel"]
    done = subprocess.run(
        [*command, "--outdir", str(folder / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        env=clean_environment(),
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (folder / "dist").glob("*.whl")
    (sdist,) = (folder / "dist").glob("*.tar.gz")
    return Built(name, wheel, sdist)


@pytest.fixture(scope="session")
def build_distribution(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Built]:
    """``build_distribution("statekit-redis")``: that distribution of this checkout, built
    once per run (``"statekit"`` is the core)."""
    built: dict[str, Built] = {}

    def build(name: str) -> Built:
        if name not in built:
            built[name] = _build(name, tmp_path_factory.mktemp(name))
        return built[name]

    return build


@pytest.fixture(scope="session")
def statekit_wheel(build_distribution: Callable[[str], Built]) -> Path:
    """The core distribution's wheel, built from this checkout's pyproject.toml, README.md,
    LICENSE and statekit/."""
    return build_distribution("statekit").wheel


@dataclass(frozen=True)
class Venv:
    """A virtualenv of a test's own. It has no pip: this environment's pip installs into
    it, pinned to the versions installed here (fast, and the same code as the suite's)."""

    path: Path

    @property
    def bin(self) -> Path:
        return self.path / ("Scripts" if sys.platform == "win32" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def install(self, *requirements: str) -> None:
        """``pip install requirements``; skips locally / fails under CI without the registry."""
        here = {dist.metadata["Name"]: dist.version for dist in importlib.metadata.distributions()}
        pins = self.path / "pins.txt"
        pins.write_text(
            "".join(
                f"{name}=={version}\n"
                for name, version in sorted(here.items())
                if name and not name.lower().startswith("statekit")
            )
        )
        _pip("install", "-q", "-c", str(pins), *requirements, python=self.python)


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    """A fresh, empty virtualenv (``python -m venv --without-pip``) in ``tmp_path``."""
    path = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120
    )
    return Venv(path)


async def assert_one_open_order_per_intent(
    intents: IntentStore, orders: Sequence[ExchangeOrder], where: str = ""
) -> dict[str, IntentStatus]:
    """What a reconciliation that converged leaves at the exchange (the reconcile
    failover and shard tests judge by it): no client order id placed twice, each
    intent with exactly one open order, matching its latest spec, and no order at the
    exchange outside some intent's legs. The statuses read."""
    client_ids = [o.client_order_id for o in orders]
    assert len(client_ids) == len(set(client_ids)), f"{where}an order was placed twice"
    statuses = await intents.statuses()
    by_client_id = {o.client_order_id: o for o in orders}
    for intent in await intents.all():
        live = [
            by_client_id[leg.client_order_id]
            for leg in statuses[intent.id].legs
            if leg.client_order_id in by_client_id
            and not by_client_id[leg.client_order_id].status.final
        ]
        assert len(live) == 1, f"{where}{intent.id}: {len(live)} open orders"
        assert (live[0].price, live[0].amount) == (intent.spec.price, intent.spec.amount), (
            f"{where}{intent.id}: the open order is not its latest spec"
        )
    tracked = {leg.client_order_id for s in statuses.values() for leg in s.legs}
    assert set(client_ids) <= tracked, f"{where}an order at the exchange belongs to nobody"
    return statuses
