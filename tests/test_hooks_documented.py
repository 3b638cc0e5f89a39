"""Every hook is documented and tested (the datasette rule, STYLE.md §5).

For each hookspec in :mod:`statekit.hookspecs` this checks that

(a) its docstring documents its parameters with ``:param``,
(b) docs/plugins.md has a heading with its exact name,
(c) some test file other than this one uses it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from statekit import hookspecs

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_DOC = ROOT / "docs" / "plugins.md"
TESTS = ROOT / "tests"
THIS = Path(__file__).resolve()


def _hookspecs() -> dict[str, Callable[..., object]]:
    return {
        name: fn
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("statekit_")
    }


HOOKSPECS = _hookspecs()


def _headings() -> set[str]:
    """Markdown ATX headings of docs/plugins.md, outside fenced code blocks, without backticks."""
    headings: set[str] = set()
    fenced = False
    for line in PLUGINS_DOC.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", line)
        if match:
            headings.add(match.group(1).strip().strip("`").strip())
    return headings


def _other_test_sources() -> dict[Path, str]:
    return {
        path: path.read_text(encoding="utf-8")
        for path in sorted(TESTS.rglob("*.py"))
        if path.resolve() != THIS
    }


def test_there_are_hookspecs_to_check() -> None:
    assert HOOKSPECS, "no statekit_* functions found in statekit.hookspecs"
    for name, fn in HOOKSPECS.items():
        # pluggy marks a spec with '<project>_spec'; an unmarked function is not a hook.
        assert hasattr(fn, "statekit_spec"), f"{name} lacks the @hookspec marker"


@pytest.mark.parametrize("name", sorted(HOOKSPECS))
def test_hookspec_docstring_documents_every_parameter(name: str) -> None:
    fn = HOOKSPECS[name]
    doc = inspect.getdoc(fn) or ""
    assert ":param" in doc, f"{name} has no ':param' in its docstring"
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc, f"{name}'s docstring does not document {param!r}"


@pytest.mark.parametrize("name", sorted(HOOKSPECS))
def test_hookspec_has_a_heading_in_plugins_doc(name: str) -> None:
    assert name in _headings(), f"docs/plugins.md has no heading named {name!r}"


@pytest.mark.parametrize("name", sorted(HOOKSPECS))
def test_hookspec_is_exercised_by_a_test(name: str) -> None:
    users = [path.name for path, text in _other_test_sources().items() if name in text]
    assert users, f"no file under tests/ (besides {THIS.name}) mentions {name}"


def test_plugins_doc_has_no_heading_for_a_hook_that_does_not_exist() -> None:
    stale = {h for h in _headings() if h.startswith("statekit_")} - set(HOOKSPECS)
    assert not stale, f"docs/plugins.md documents hooks that are not specified: {sorted(stale)}"
