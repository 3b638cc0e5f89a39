"""Command groups imported only when one of their commands runs.

The trading layer's ``statekit reconcile`` group is mounted this way, so that
``statekit --help`` and ``statekit get`` never import it. A lazy group is an ordinary
typer group whose ``commands`` mapping builds the real group on first access; its name
and help are given up front, because ``statekit --help`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import typer
from typer.core import TyperGroup
from typer.main import get_command


class LazyCommands(MutableMapping[str, Any]):
    """The commands of the Typer app that ``load()`` returns, built on first use.

    The values are commands of whichever click typer runs on (recent typer carries its
    own copy), hence ``Any``.
    """

    def __init__(self, load: Callable[[], typer.Typer]) -> None:
        self._load = load
        self._commands: MutableMapping[str, Any] | None = None

    def _loaded(self) -> MutableMapping[str, Any]:
        if self._commands is None:
            group = get_command(self._load())
            assert isinstance(group, TyperGroup), "a lazy group mounts an app of several commands"
            self._commands = group.commands
        return self._commands

    def __getitem__(self, name: str) -> Any:
        return self._loaded()[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._loaded()[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def lazy_group(
    parent: TyperGroup, name: str, help: str, load: Callable[[], typer.Typer]
) -> TyperGroup:
    """The group ``name`` of ``parent`` with the commands of the app ``load()`` returns,
    as ``add_typer(app, name=name, help=help)`` would mount an app made with
    ``no_args_is_help=True`` and no callback; ``load`` runs when a command is looked up."""
    group = TyperGroup(
        name=name, help=help, no_args_is_help=True, rich_markup_mode=parent.rich_markup_mode
    )
    group.commands = LazyCommands(load)
    return group
