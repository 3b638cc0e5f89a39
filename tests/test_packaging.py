"""What a PyPI user meets: every distribution of this repository, built as a release
builds it (wheel and sdist), carries the license text, the one version, compatible
ranges between the core and the plugins, classifiers and project links; the core's
wheel holds every file of the statekit package. scripts/release.py keeps the places
that state the version in step, and its check runs here too.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Callable
from email.message import Message
from email.parser import Parser
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import statekit

from .conftest import REPO, Built

PLUGINS = sorted(path.parent.name for path in REPO.glob("plugins/*/pyproject.toml"))
LICENSE = (REPO / "LICENSE").read_bytes()
LINKS = {"Homepage", "Documentation", "Changelog", "Issues", "Source"}


def _release() -> ModuleType:
    """scripts/release.py (not a package: loaded from its path, once)."""
    name = "statekit_scripts_release"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "release.py")
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _wheel_metadata(wheel: Path) -> tuple[Message, bytes]:
    """(METADATA, the license file) of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        (info,) = {name.split("/")[0] for name in archive.namelist() if ".dist-info/" in name}
        text = archive.read(f"{info}/METADATA").decode()
        return Parser().parsestr(text), archive.read(f"{info}/licenses/LICENSE")


def _sdist_metadata(sdist: Path) -> tuple[Message, bytes]:
    """(PKG-INFO, LICENSE) of an sdist."""
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]

        def read(name: str) -> bytes:
            member = archive.extractfile(f"{root}/{name}")
            assert member is not None, name
            return member.read()

        return Parser().parsestr(read("PKG-INFO").decode()), read("LICENSE")


def _next_series(version: Version) -> Version:
    """The first version a release of ``version``'s series is not compatible with."""
    if version.major == 0:
        return Version(f"0.{version.minor + 1}")
    return Version(f"{version.major + 1}")


def _assert_compatible_range(requirement: Requirement) -> None:
    """``requirement`` takes this version's series and nothing before or after it."""
    version = Version(statekit.__version__)
    assert version in requirement.specifier, requirement
    assert _next_series(version) not in requirement.specifier, requirement
    below = [spec for spec in requirement.specifier if spec.operator == ">="]
    assert [spec.version for spec in below] == [statekit.__version__], requirement


@pytest.mark.parametrize("name", ["statekit", *PLUGINS])
def test_each_distribution_ships_the_license_and_the_one_version(
    name: str, build_distribution: Callable[[str], Built]
) -> None:
    built = build_distribution(name)
    for metadata, license_text in (_wheel_metadata(built.wheel), _sdist_metadata(built.sdist)):
        assert license_text == LICENSE
        assert metadata["Name"] == name
        assert metadata["Version"] == statekit.__version__
        assert metadata["License-Expression"] == "Apache-2.0"
        assert metadata.get_all("License-File") == ["LICENSE"]
        classifiers = metadata.get_all("Classifier") or []
        assert "Programming Language :: Python :: 3.11" in classifiers
        assert "Typing :: Typed" in classifiers
        links = dict(link.split(", ", 1) for link in metadata.get_all("Project-URL") or [])
        assert links.keys() >= LINKS, links
    requires = [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]
    if name == "statekit":
        # Each extra named after a plugin pins that plugin's compatible series.
        for plugin in PLUGINS:
            extra = plugin.removeprefix("statekit-")
            (pin,) = [r for r in requires if r.name == plugin]
            assert pin.marker is not None and pin.marker.evaluate({"extra": extra}), pin
            _assert_compatible_range(pin)
    else:
        (core,) = [r for r in requires if r.name == "statekit" and r.marker is None]
        _assert_compatible_range(core)


def test_the_core_wheel_holds_every_file_of_the_statekit_package(
    build_distribution: Callable[[str], Built],
) -> None:
    """Templates, static assets and py.typed too: a file that exists in the tree but not
    in the wheel is missing package data in pyproject.toml."""
    in_tree = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "statekit").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    with zipfile.ZipFile(build_distribution("statekit").wheel) as wheel:
        in_wheel = {name for name in wheel.namelist() if name.startswith("statekit/")}
    assert sorted(in_tree - in_wheel) == []


def test_every_place_that_states_the_version_agrees() -> None:
    assert _release().problems(REPO) == []


def test_one_command_bumps_every_distribution(tmp_path: Path) -> None:
    release = _release()
    for dist in release.distributions(REPO):
        folder = tmp_path / dist.folder.relative_to(REPO)
        (folder / dist.version_file.parent.name).mkdir(parents=True)
        for source in (dist.pyproject, dist.folder / "LICENSE", dist.version_file):
            shutil.copy2(source, folder / source.relative_to(dist.folder))

    release.bump("1.0.0", root=tmp_path)

    assert release.problems(tmp_path) == []
    bumped = release.distributions(tmp_path)
    assert {dist.version for dist in bumped} == {"1.0.0"}
    for plugin in bumped[1:]:
        assert '"statekit>=1.0.0,<2"' in plugin.pyproject.read_text()
        assert f'"{plugin.name}>=1.0.0,<2"' in bumped[0].pyproject.read_text()

    # A place left behind is named.
    straggler = bumped[-1].version_file
    straggler.write_text(straggler.read_text().replace('"1.0.0"', '"0.9.0"'))
    assert [str(straggler) in problem for problem in release.problems(tmp_path)] == [True]
