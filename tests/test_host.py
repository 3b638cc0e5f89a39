"""The plugin host, against real installed-looking distributions.

Nothing here mocks importlib: each test writes ``<dist>-<version>.dist-info``
folders (METADATA + entry_points.txt with a ``[statekit]`` group) and plugin
modules into a temporary directory put on ``sys.path``, so
``importlib.metadata.entry_points`` finds them exactly as it finds a pip install.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from importlib import metadata
from pathlib import Path

import pydantic
import pytest

import statekit
from statekit import PluginError, PluginHost, StateStore, ValidationError
from statekit.backend import JSON
from statekit.backends.memory import MemoryBackend
from statekit.backends.sqlite import SqliteBackend
from statekit.hookspecs import hookimpl
from statekit.host import KNOWN_SCHEMES, PluginInfo
from statekit.registry import BackendRegistry, ValidatorRegistry

BUILTINS = {"memory", "sqlite", "trading", "tiered"}


class Site:
    """A directory on sys.path that looks like site-packages to importlib."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.modules: set[str] = set()
        root.mkdir(parents=True, exist_ok=True)
        monkeypatch.syspath_prepend(str(root))

    def install(
        self,
        dist: str,
        *,
        version: str = "1.0.0",
        entry_points: dict[str, str],
        modules: dict[str, str],
    ) -> None:
        """Write a distribution ``dist`` with ``[statekit]`` entry points and its modules."""
        folder = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (folder / "entry_points.txt").write_text(f"[statekit]\n{lines}")
        for module, source in modules.items():
            (self.root / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.add(module)
        # Directory listings (imports) and metadata lookups are cached by mtime.
        importlib.invalidate_caches()

    def forget(self) -> None:
        for module in self.modules:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STATEKIT_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("STATEKIT_BLOCKED_PLUGINS", raising=False)
    monkeypatch.delenv("STATEKIT_URL", raising=False)
    monkeypatch.delenv("STATEKIT_PLUGINS__DISABLE_AUTOLOAD", raising=False)
    monkeypatch.delenv("STATEKIT_PLUGINS__BLOCKED", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env / config.json is read


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    site = Site(tmp_path / "site", monkeypatch)
    yield site
    site.forget()


@pytest.fixture
def second_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """Prepended after ``site``, so its entry points come first."""
    site = Site(tmp_path / "site2", monkeypatch)
    yield site
    site.forget()


FAKE_PLUGIN = """
    from statekit import hookimpl
    from statekit.backends.memory import MemoryBackend
    from statekit.errors import ValidationError


    class FakeBackend(MemoryBackend):
        name = "fake"


    def check_order(key, data):
        if not isinstance(data, dict) or data.get("qty", 0) <= 0:
            raise ValueError("qty must be positive")


    @hookimpl
    def statekit_register_backends(registry):
        registry.add("fake", FakeBackend)


    @hookimpl
    def statekit_register_validators(registry):
        registry.add("fake-order", check_order)
"""


def install_fake(site: Site) -> None:
    site.install(
        "statekit-fake",
        version="1.2.3",
        entry_points={"fake": "statekit_fake"},
        modules={"statekit_fake": FAKE_PLUGIN},
    )


def by_name(host: PluginHost) -> dict[str, PluginInfo]:
    """The plugins that are loaded (blocked ones are listed too, marked blocked)."""
    return {info.name: info for info in host.plugins() if not info.blocked}


def only_backend(scheme: str, name: str = "plugin") -> str:
    """Source of a plugin module whose backends hook registers one MemoryBackend subclass."""
    return f"""
        from statekit import hookimpl
        from statekit.backends.memory import MemoryBackend


        class Backend_(MemoryBackend):
            name = {name!r}


        @hookimpl
        def statekit_register_backends(registry):
            registry.add({scheme!r}, Backend_)
    """


# -- built-ins -------------------------------------------------------------------------------------


def test_builtins_register_through_the_backends_hook() -> None:
    host = PluginHost(autoload=False)
    infos = by_name(host)
    assert set(infos) == BUILTINS
    version = metadata.version("statekit")
    for name in BUILTINS:
        info = infos[name]
        assert info.distribution == "statekit"
        assert info.version == version
        assert info.builtin
        assert info.backends == ([] if name in {"trading", "tiered"} else [name])
        assert info.error is None
    assert infos["trading"].validators == host.validators().owned_by("trading") != []
    assert host.backends().schemes() == ["memory", "sqlite"]
    assert host.backend_class("memory") is MemoryBackend
    assert host.backend_class("SQLite") is SqliteBackend  # schemes are case-insensitive
    assert host.failures() == []
    assert infos["memory"].as_dict()["backends"] == ["memory"]


def test_the_hook_is_called_once_per_host() -> None:
    calls: list[str] = []

    class Counting:
        @statekit.hookimpl
        def statekit_register_backends(self, registry: BackendRegistry) -> None:
            calls.append("backends")

        @statekit.hookimpl
        def statekit_register_validators(self, registry: ValidatorRegistry) -> None:
            calls.append("validators")

    host = PluginHost(autoload=False, plugins=[("counting", Counting())])
    host.backends()
    host.plugins()
    host.backend_class("memory")
    host.validators()
    assert calls == ["backends", "validators"]


# -- entry-point plugins ---------------------------------------------------------------------------


def test_entry_point_plugin_registers_a_backend_and_a_validator(site: Site) -> None:
    install_fake(site)
    host = PluginHost()
    infos = by_name(host)
    assert BUILTINS | {"fake"} <= set(infos)
    fake = infos["fake"]
    assert fake.distribution == "statekit-fake"
    assert fake.version == "1.2.3"
    assert not fake.builtin
    assert fake.backends == ["fake"]
    assert fake.validators == ["fake-order"]
    assert fake.error is None
    cls = host.backend_class("fake")
    assert cls.__module__ == "statekit_fake"
    assert issubclass(cls, MemoryBackend)
    assert "fake-order" in host.validators().kinds()


@pytest.mark.asyncio
async def test_statekit_open_uses_the_entry_point_backend(site: Site) -> None:
    install_fake(site)
    async with await statekit.open("fake://") as store:
        assert type(store.backend).__module__ == "statekit_fake"
        assert store.backend.name == "fake"
        await store.put("order/1", {"qty": 2}, kind="fake-order")
        got = await store.get("order/1")
        assert got is not None
        assert got.data == {"qty": 2}


@pytest.mark.asyncio
async def test_a_hook_registered_validator_refuses_a_bad_value_and_stores_nothing(
    site: Site,
) -> None:
    install_fake(site)
    async with await statekit.open("fake://") as store:
        with pytest.raises(ValidationError, match="qty must be positive") as caught:
            await store.put("order/2", {"qty": -1}, kind="fake-order")
        assert caught.value.key == "order/2"
        assert isinstance(caught.value.__cause__, ValueError)
        assert await store.get("order/2") is None
        assert await store.backend.read("order/2") == []
        # Other kinds are not checked by that validator.
        await store.put("note/1", {"qty": -1})
        assert (await store.backend.latest(["order/2", "note/1"])).keys() == {"note/1"}


@pytest.mark.asyncio
async def test_an_in_process_plugin_validator_guards_a_batch() -> None:
    class Checks:
        @statekit.hookimpl
        def statekit_register_validators(self, registry: ValidatorRegistry) -> None:
            def no_shorts(key: str, data: JSON) -> None:
                if isinstance(data, dict) and str(data.get("qty", "0")).startswith("-"):
                    raise ValidationError(f"{key}: no short positions", key=key, reason="short")

            registry.add("position", no_shorts)

    host = PluginHost(autoload=False, plugins=[("checks", Checks())])
    assert by_name(host)["checks"].validators == ["position"]
    async with StateStore(MemoryBackend(), validators=host.validators()) as store:
        with pytest.raises(ValidationError) as caught:
            await store.batch(
                [
                    statekit.Write("position/EURUSD", {"qty": "1"}, kind="position"),
                    statekit.Write("position/GBPUSD", {"qty": "-1"}, kind="position"),
                ]
            )
        assert caught.value.reason == "short"
        assert caught.value.key == "position/GBPUSD"
        # The good write of the refused batch was not stored either.
        assert await store.backend.latest(["position/EURUSD", "position/GBPUSD"]) == {}


# -- failures are reported, the host keeps working -------------------------------------------------


def test_a_plugin_whose_import_raises_is_reported_and_the_host_still_works(site: Site) -> None:
    site.install(
        "statekit-broken",
        version="0.0.1",
        entry_points={"broken": "statekit_broken"},
        modules={"statekit_broken": "raise RuntimeError('boom at import')\n"},
    )
    install_fake(site)
    host = PluginHost()
    failures = {info.name: info for info in host.failures()}
    assert set(failures) == {"broken"}
    broken = failures["broken"]
    assert broken.distribution == "statekit-broken"
    assert broken.version == "0.0.1"
    assert broken.error is not None
    assert "statekit_broken" in broken.error
    assert "RuntimeError" in broken.error
    assert "boom at import" in broken.error
    assert broken.backends == []
    assert host.backend_class("memory") is MemoryBackend
    assert host.backend_class("fake").__module__ == "statekit_fake"


def test_an_entry_point_to_a_missing_module_is_reported(site: Site) -> None:
    site.install(
        "statekit-ghost",
        entry_points={"ghost": "statekit_ghost_not_there"},
        modules={},
    )
    host = PluginHost()
    (failure,) = host.failures()
    assert failure.name == "ghost"
    assert failure.error is not None
    assert "ModuleNotFoundError" in failure.error


def test_a_plugin_whose_hook_raises_is_reported_and_others_still_register(site: Site) -> None:
    site.install(
        "statekit-angry",
        entry_points={"angry": "statekit_angry"},
        modules={
            "statekit_angry": """
                from statekit import hookimpl


                @hookimpl
                def statekit_register_backends(registry):
                    raise KeyError("no config for angry")
            """
        },
    )
    install_fake(site)
    host = PluginHost()
    infos = by_name(host)
    angry = infos["angry"]
    assert angry.error is not None
    assert "statekit_register_backends failed" in angry.error
    assert "KeyError" in angry.error
    assert "no config for angry" in angry.error
    assert [info.name for info in host.failures()] == ["angry"]
    assert infos["fake"].backends == ["fake"]
    assert infos["fake"].error is None
    assert {"fake", "memory", "sqlite"} <= set(host.backends().schemes())


def test_failures_of_both_hooks_are_both_reported() -> None:
    class Fragile:
        @statekit.hookimpl
        def statekit_register_backends(self, registry: BackendRegistry) -> None:
            raise RuntimeError("backends broke")

        @statekit.hookimpl
        def statekit_register_validators(self, registry: ValidatorRegistry) -> None:
            raise RuntimeError("validators broke")

    host = PluginHost(autoload=False, plugins=[("fragile", Fragile())])
    (failure,) = host.failures()
    assert failure.error is not None
    assert "backends broke" in failure.error
    assert "validators broke" in failure.error


def test_a_hookimpl_with_wrong_arguments_is_reported_not_raised(site: Site) -> None:
    site.install(
        "statekit-typo",
        entry_points={"typo": "statekit_typo"},
        modules={
            "statekit_typo": """
                from statekit import hookimpl


                @hookimpl
                def statekit_register_backends(reg):
                    pass
            """
        },
    )
    host = PluginHost()
    (failure,) = host.failures()
    assert failure.name == "typo"
    assert failure.error is not None
    assert "failed to register" in failure.error
    assert "reg" in failure.error
    assert host.backend_class("memory") is MemoryBackend


def test_an_in_process_plugin_with_wrong_arguments_raises_a_plugin_error() -> None:
    class Typo:
        @statekit.hookimpl
        def statekit_register_backends(self, reg: BackendRegistry) -> None:
            pass

    with pytest.raises(PluginError) as caught:
        PluginHost(autoload=False, plugins=[("typo", Typo())])
    assert caught.value.plugin == "typo"


def test_an_entry_point_named_like_a_builtin_is_reported_not_skipped(site: Site) -> None:
    site.install(
        "statekit-impostor",
        entry_points={"memory": "statekit_impostor"},
        modules={"statekit_impostor": only_backend("impostor")},
    )
    host = PluginHost()
    (failure,) = host.failures()
    assert failure.name == "memory"
    assert failure.distribution == "statekit-impostor"
    assert failure.error is not None
    assert "already taken by statekit" in failure.error
    assert "statekit_impostor" not in sys.modules  # never imported
    assert host.backend_class("memory") is MemoryBackend


# -- what a registry refuses -----------------------------------------------------------------------


def test_a_duplicate_scheme_is_reported_against_the_second_plugin(site: Site) -> None:
    site.install(
        "statekit-copycat",
        entry_points={"copycat": "statekit_copycat"},
        modules={"statekit_copycat": only_backend("memory")},
    )
    host = PluginHost()
    infos = by_name(host)
    copycat = infos["copycat"]
    assert copycat.error is not None
    assert "'memory'" in copycat.error
    assert "already served by plugin 'memory'" in copycat.error
    assert copycat.backends == []
    assert infos["memory"].error is None
    assert infos["memory"].backends == ["memory"]
    assert host.backend_class("memory") is MemoryBackend


def test_between_two_third_party_plugins_the_later_one_is_blamed(
    site: Site, second_site: Site
) -> None:
    # second_site is earlier on sys.path, so its plugin loads (and registers) first.
    second_site.install(
        "statekit-first",
        entry_points={"first": "statekit_first"},
        modules={"statekit_first": only_backend("dup", "first")},
    )
    site.install(
        "statekit-second",
        entry_points={"second": "statekit_second"},
        modules={"statekit_second": only_backend("dup", "second")},
    )
    host = PluginHost()
    infos = by_name(host)
    assert infos["first"].backends == ["dup"]
    assert infos["first"].error is None
    assert infos["second"].backends == []
    assert infos["second"].error is not None
    assert "already served by plugin 'first'" in infos["second"].error
    assert host.backend_class("dup").name == "first"


def test_backend_registry_refuses_duplicates_case_insensitively() -> None:
    registry = BackendRegistry()
    registry.add("Mem", MemoryBackend)
    assert registry.get("mem") is MemoryBackend
    assert registry.get("MEM") is MemoryBackend
    assert registry.get("other") is None
    with pytest.raises(PluginError, match="already served"):
        registry.add("mem", SqliteBackend)
    assert registry.schemes() == ["mem"]


@pytest.mark.parametrize(
    "registered",
    [
        pytest.param("dict", id="not-a-backend-class"),
        pytest.param("MemoryBackend()", id="an-instance"),
        pytest.param("'statekit_fake:FakeBackend'", id="a-string"),
    ],
)
def test_registering_a_non_backend_is_a_reported_plugin_error(site: Site, registered: str) -> None:
    site.install(
        "statekit-bogus",
        entry_points={"bogus": "statekit_bogus"},
        modules={
            "statekit_bogus": f"""
                from statekit import hookimpl
                from statekit.backends.memory import MemoryBackend


                @hookimpl
                def statekit_register_backends(registry):
                    registry.add("bogus", {registered})
            """
        },
    )
    host = PluginHost()
    (failure,) = host.failures()
    assert failure.name == "bogus"
    assert failure.error is not None
    assert "not a statekit.backend.Backend subclass" in failure.error
    assert "bogus" not in host.backends().schemes()
    with pytest.raises(PluginError):
        host.backend_class("bogus")


def test_backend_registry_names_the_plugin_in_its_error() -> None:
    registry = BackendRegistry()
    with pytest.raises(PluginError) as caught:
        registry.add("x", dict)  # type: ignore[arg-type]
    assert "not a statekit.backend.Backend subclass" in str(caught.value)
    assert caught.value.plugin == "?"  # outside a hook call no plugin is current


def test_a_non_callable_validator_is_a_reported_plugin_error() -> None:
    class Sloppy:
        @statekit.hookimpl
        def statekit_register_validators(self, registry: ValidatorRegistry) -> None:
            registry.add("order", "qty > 0")  # type: ignore[arg-type]

    host = PluginHost(autoload=False, plugins=[("sloppy", Sloppy())])
    (failure,) = host.failures()
    assert failure.name == "sloppy"
    assert failure.error is not None
    assert "not callable" in failure.error
    assert host.validators().owned_by("sloppy") == []


# -- turning plugins off ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_disable_autoload_env_skips_entry_points_but_keeps_builtins(
    site: Site, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    install_fake(site)
    monkeypatch.setenv("STATEKIT_DISABLE_PLUGIN_AUTOLOAD", value)
    host = PluginHost()
    assert set(by_name(host)) == BUILTINS
    assert "statekit_fake" not in sys.modules
    with pytest.raises(PluginError, match="no backend for URL scheme 'fake'"):
        host.backend_class("fake")


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_a_false_disable_autoload_env_keeps_autoload_on(
    site: Site, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    install_fake(site)
    monkeypatch.setenv("STATEKIT_DISABLE_PLUGIN_AUTOLOAD", value)
    assert "fake" in by_name(PluginHost())


def test_autoload_false_skips_entry_points_but_keeps_builtins_and_given_plugins(
    site: Site,
) -> None:
    install_fake(site)

    class Mine:
        @statekit.hookimpl
        def statekit_register_validators(self, registry: ValidatorRegistry) -> None:
            registry.add("mine", lambda key, data: None)

    host = PluginHost(autoload=False, plugins=[("mine", Mine())])
    infos = by_name(host)
    assert set(infos) == BUILTINS | {"mine"}
    assert infos["mine"].distribution == "(in process)"
    assert infos["mine"].validators == ["mine"]
    assert "statekit_fake" not in sys.modules
    assert host.backends().schemes() == ["memory", "sqlite"]


def test_blocking_by_argument_never_imports_the_plugin(site: Site) -> None:
    install_fake(site)
    host = PluginHost(blocked=["fake"])
    assert "fake" not in by_name(host)
    assert "statekit_fake" not in sys.modules
    assert host.failures() == []
    with pytest.raises(PluginError):
        host.backend_class("fake")


def test_blocking_by_env_and_argument_combine(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake(site)
    monkeypatch.setenv("STATEKIT_BLOCKED_PLUGINS", " fake , sqlite,")
    # plugins installed in this environment (statekit-postgres...) are not this test's
    installed = {ep.name for ep in metadata.entry_points(group="statekit")} - {"fake"}
    host = PluginHost(blocked=["memory", "trading", *installed])
    assert host.blocked == {"fake", "sqlite", "memory", "trading", *installed}
    assert by_name(host) == {}
    assert host.backends().schemes() == []
    with pytest.raises(PluginError, match=r"installed: none"):
        host.backend_class("sqlite")


def test_blocking_a_builtin_removes_its_scheme_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STATEKIT_BLOCKED_PLUGINS", "memory")
    host = PluginHost(autoload=False)
    assert set(by_name(host)) == {"sqlite", "trading", "tiered"}
    assert host.backends().schemes() == ["sqlite"]
    with pytest.raises(PluginError) as caught:
        host.backend_class("memory")
    message = str(caught.value)
    assert "installed: sqlite" in message
    assert "'memory' is blocked" in message


@pytest.mark.asyncio
async def test_statekit_open_honours_a_blocked_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEKIT_BLOCKED_PLUGINS", "memory")
    with pytest.raises(PluginError, match="'memory' is blocked"):
        await statekit.open("memory://")


# -- unknown schemes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "package"),
    [
        ("postgresql", "statekit-postgres"),
        ("postgres", "statekit-postgres"),
        ("redis", "statekit-redis"),
        ("mongodb+srv", "statekit-mongodb"),
        ("influxdb", "statekit-influxdb"),
        ("file", "statekit-file"),
    ],
)
def test_an_unknown_scheme_lists_installed_schemes_and_the_pip_package(
    scheme: str, package: str
) -> None:
    assert KNOWN_SCHEMES[scheme] == package
    host = PluginHost(autoload=False)
    with pytest.raises(PluginError) as caught:
        host.backend_class(scheme)
    message = str(caught.value)
    assert f"no backend for URL scheme {scheme!r}" in message
    assert "installed: memory, sqlite" in message
    assert f"pip install {package}" in message


def test_a_scheme_no_project_package_serves_gets_no_pip_hint() -> None:
    with pytest.raises(PluginError) as caught:
        PluginHost(autoload=False).backend_class("ftp")
    assert "installed: memory, sqlite" in str(caught.value)
    assert "pip install" not in str(caught.value)


@pytest.mark.asyncio
async def test_statekit_open_of_an_unknown_scheme_names_the_package_not_the_password() -> None:
    host = PluginHost(autoload=False)
    with pytest.raises(PluginError) as caught:
        await statekit.open("postgresql://trader:s3cret@db.example/state", host=host)
    assert "pip install statekit-postgres" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_an_installed_but_broken_package_is_named_instead_of_pip_install(site: Site) -> None:
    # METADATA spells the name with an underscore, as some build backends do.
    site.install(
        "statekit_postgres",
        version="0.3.0",
        entry_points={"postgres": "statekit_postgres_fake"},
        modules={"statekit_postgres_fake": "import asyncpg_is_not_installed_here\n"},
    )
    host = PluginHost()
    with pytest.raises(PluginError) as caught:
        host.backend_class("postgresql")
    message = str(caught.value)
    assert "statekit-postgres is installed but failed" in message
    assert "asyncpg_is_not_installed_here" in message
    assert "pip install" not in message


def test_an_installed_but_blocked_package_is_named_instead_of_pip_install(site: Site) -> None:
    site.install(
        "statekit-postgres",
        entry_points={"postgres": "statekit_postgres_fake"},
        modules={"statekit_postgres_fake": only_backend("postgresql")},
    )
    host = PluginHost(blocked=["postgres"])
    with pytest.raises(PluginError) as caught:
        host.backend_class("postgresql")
    assert "statekit-postgres is installed but its plugin 'postgres' is blocked" in str(
        caught.value
    )


# -- validators ------------------------------------------------------------------------------------


class Position(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    symbol: str
    qty: Decimal


class ModelPlugin:
    @statekit.hookimpl
    def statekit_register_validators(self, registry: ValidatorRegistry) -> None:
        registry.add_model("position", Position)


def test_add_model_accepts_good_data_and_names_each_bad_field() -> None:
    registry = ValidatorRegistry()
    registry.add_model("position", Position)
    registry.validate("position", "position/EURUSD", {"symbol": "EURUSD", "qty": "1.5"})
    with pytest.raises(ValidationError) as caught:
        registry.validate("position", "position/EURUSD", {"symbol": "EURUSD", "qty": "lots"})
    err = caught.value
    assert err.key == "position/EURUSD"
    assert "qty" in err.reason
    assert isinstance(err.__cause__, pydantic.ValidationError)
    with pytest.raises(ValidationError) as caught:
        registry.validate("position", "position/X", {"qty": "1", "side": "long"})
    assert "symbol" in caught.value.reason
    assert "side" in caught.value.reason
    # Another kind is not checked by it.
    registry.validate("order", "order/1", {"anything": True})


def test_add_model_refuses_what_is_not_a_pydantic_model() -> None:
    registry = ValidatorRegistry()
    with pytest.raises(PluginError, match=r"not a pydantic\.BaseModel subclass"):
        registry.add_model("position", dict)  # type: ignore[arg-type]
    assert registry.kinds() == []


@pytest.mark.asyncio
async def test_add_model_through_the_hook_guards_the_store() -> None:
    host = PluginHost(autoload=False, plugins=[("models", ModelPlugin())])
    assert by_name(host)["models"].validators == ["position"]
    async with await statekit.open("memory://", host=host) as store:
        ok = await store.put("position/EURUSD", {"symbol": "EURUSD", "qty": "1.5"}, kind="position")
        assert ok.version == 1
        with pytest.raises(ValidationError) as caught:
            await store.put("position/EURUSD", {"symbol": "EURUSD", "qty": None}, kind="position")
        assert caught.value.key == "position/EURUSD"
        head = await store.get("position/EURUSD")
        assert head is not None
        assert head.version == 1
        assert head.data == {"symbol": "EURUSD", "qty": "1.5"}


def test_validator_value_and_type_errors_become_validation_errors() -> None:
    registry = ValidatorRegistry()

    def strict(key: str, data: JSON) -> None:
        if not isinstance(data, dict):
            raise TypeError("expected an object")

    registry.add("order", strict)
    with pytest.raises(ValidationError, match="expected an object") as caught:
        registry.validate("order", "order/1", [1, 2])
    assert caught.value.key == "order/1"
    assert isinstance(caught.value.__cause__, TypeError)


def test_validator_registry_refuses_a_bad_kind() -> None:
    with pytest.raises(ValidationError):
        ValidatorRegistry().add("", lambda key, data: None)


class _HalfThenFail:
    @hookimpl
    def statekit_register_backends(self, registry: BackendRegistry) -> None:
        registry.add("half", MemoryBackend)
        raise RuntimeError("boom after registering")


class _Misspelt:
    @hookimpl
    def statekit_register_backend(self, registry: BackendRegistry) -> None:  # no such hook
        registry.add("never", MemoryBackend)


def test_a_plugin_failing_part_way_registers_nothing() -> None:
    host = PluginHost(autoload=False, plugins=[("half", _HalfThenFail())])
    assert host.backends().get("half") is None
    (failed,) = host.failures()
    assert failed.name == "half" and "boom after registering" in (failed.error or "")
    assert failed.backends == []


def test_a_misspelt_hook_is_an_error_not_silence() -> None:
    with pytest.raises(PluginError, match="unknown hook statekit_register_backend "):
        PluginHost(autoload=False, plugins=[("misspelt", _Misspelt())])


def test_blocked_plugins_are_listed_as_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATEKIT_BLOCKED_PLUGINS", raising=False)
    infos = {i.name: i for i in PluginHost(autoload=False, blocked=["memory"]).plugins()}
    assert infos["memory"].blocked and infos["memory"].backends == []
    assert infos["memory"].as_dict()["blocked"] is True
    assert not infos["sqlite"].blocked
