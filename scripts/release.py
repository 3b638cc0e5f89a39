"""One version for every distribution this repository publishes, and their links.

statekit and the plugins under plugins/ are released together under one version
number. Each distribution is built from its own folder, and setuptools refuses a
version file outside the folder it builds, so the number is written once per
distribution: in its import package's ``__version__``, which its pyproject.toml reads
(``dynamic = ["version"]``, ``version = {attr = "<package>.__version__"}``). The
ranges between them follow from it: a plugin requires the core's series
(``statekit>=0.1.0,<0.2``) and the core's extras require the plugins' series
(``statekit-postgres>=0.1.0,<0.2``); from 1.0 on a series is a major version.

    python scripts/release.py check           # every place agrees (else exit 1, listing them)
    python scripts/release.py bump 0.2.0      # rewrite every version and range at once
    python scripts/release.py home https://…  # the project's links in every pyproject.toml

tests/test_packaging.py runs ``check`` and builds every distribution to read the same
facts back from the built metadata.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION_LINE = re.compile(r'^__version__ = "(?P<version>[^"]+)"$', re.MULTILINE)
RELEASE = re.compile(r"^\d+\.\d+\.\d+$")
RANGE = re.compile(r'"(?P<name>statekit(?:-[a-z]+)?)>=(?P<low>[^",<]+),<(?P<high>[^"]+)"')
HOME = re.compile(r'^(?P<key>\w+) = "(?P<base>https?://[^/"]+)(?P<path>[^"]*)"$', re.MULTILINE)


@dataclass(frozen=True)
class Distribution:
    """One distribution: its folder, name, and the file holding its ``__version__``."""

    folder: Path
    name: str
    version_file: Path

    @property
    def pyproject(self) -> Path:
        return self.folder / "pyproject.toml"

    @property
    def version(self) -> str | None:
        found = VERSION_LINE.search(self.version_file.read_text())
        return found["version"] if found else None


def distributions(root: Path = ROOT) -> list[Distribution]:
    """The core first, then each plugins/*/ folder with a pyproject.toml."""
    found = []
    for pyproject in [root / "pyproject.toml", *sorted(root.glob("plugins/*/pyproject.toml"))]:
        project = tomllib.loads(pyproject.read_text())
        name = project["project"]["name"]
        attr = project.get("tool", {}).get("setuptools", {}).get("dynamic", {}).get("version", {})
        module = str(attr.get("attr", name.replace("-", "_") + ".__version__"))
        package = module.rpartition(".")[0]
        version_file = pyproject.parent / package / "__init__.py"
        found.append(Distribution(pyproject.parent, name, version_file))
    return found


def series(version: str) -> tuple[str, str]:
    """``(lowest, first excluded)`` of the versions compatible with ``version``."""
    major, minor, _ = (int(part) for part in version.split("."))
    return version, (f"{major + 1}" if major >= 1 else f"0.{minor + 1}")


def problems(root: Path = ROOT) -> list[str]:
    """Every disagreement: versions, ranges, dynamic version, license file, links."""
    dists = distributions(root)
    core = dists[0]
    version = core.version
    if version is None or not RELEASE.match(version):
        return [f"{core.version_file}: no __version__ = 'X.Y.Z' line"]
    low, high = series(version)
    license_text = (root / "LICENSE").read_bytes() if (root / "LICENSE").exists() else None
    homes = set()
    found = []
    for dist in dists:
        text = dist.pyproject.read_text()
        project = tomllib.loads(text)["project"]
        if dist.version != version:
            found.append(f"{dist.version_file}: __version__ {dist.version!r}, core {version!r}")
        if "version" in project or "version" not in project.get("dynamic", []):
            found.append(f"{dist.pyproject}: version must be dynamic (read from __version__)")
        if license_text is None or (dist.folder / "LICENSE").read_bytes() != license_text:
            found.append(f"{dist.folder / 'LICENSE'}: missing or not the root LICENSE")
        if project.get("license-files") != ["LICENSE"]:
            found.append(f"{dist.pyproject}: license-files must be ['LICENSE']")
        homes |= {m["base"] for m in HOME.finditer(text)}
        wanted = {d.name for d in dists[1:]} if dist is core else {"statekit"}
        ranges = {m["name"]: (m["low"], m["high"]) for m in RANGE.finditer(text)}
        for name in sorted(wanted):
            if ranges.get(name) != (low, high):
                found.append(
                    f"{dist.pyproject}: {name} range {ranges.get(name)}, wanted >={low},<{high}"
                )
    if len(homes) != 1:
        found.append(f"project links point to {sorted(homes) or 'nothing'}, wanted one home")
    return found


def bump(version: str, root: Path = ROOT) -> None:
    """Write ``version`` into every ``__version__`` and every range between the dists."""
    if not RELEASE.match(version):
        raise SystemExit(f"error: {version!r} is not X.Y.Z")
    low, high = series(version)
    for dist in distributions(root):
        text = dist.version_file.read_text()
        dist.version_file.write_text(VERSION_LINE.sub(f'__version__ = "{version}"', text))
        text = dist.pyproject.read_text()
        dist.pyproject.write_text(RANGE.sub(rf'"\g<name>>={low},<{high}"', text))


def home(url: str, root: Path = ROOT) -> None:
    """Point every project link of every distribution at ``url`` (paths kept)."""
    for dist in distributions(root):
        text = dist.pyproject.read_text()
        dist.pyproject.write_text(HOME.sub(rf'\g<key> = "{url.rstrip("/")}\g<path>"', text))


def main(argv: list[str]) -> int:
    match argv:
        case ["check"]:
            found = problems()
            print("\n".join(found) or f"every distribution is {distributions()[0].version}")
            return 1 if found else 0
        case ["bump", version]:
            bump(version)
        case ["home", url]:
            home(url)
        case _:
            print(__doc__.split("\n\n")[2], file=sys.stderr)
            return 2
    found = problems()
    print("\n".join(found) or f"every distribution is {distributions()[0].version}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
