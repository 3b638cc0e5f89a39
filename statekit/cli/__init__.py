"""The ``statekit`` command: inspect plugins, check a store, read and write keys, snapshots,
migrate legacy files, serve the API, inspect reconciliation.

One module per group of commands: :mod:`~statekit.cli.plugins`,
:mod:`~statekit.cli.doctor`, :mod:`~statekit.cli.keys` (get, put, delete, history, ls),
:mod:`~statekit.cli.prune`, :mod:`~statekit.cli.snapshots`, :mod:`~statekit.cli.migrate`,
:mod:`~statekit.cli.serve`;
the options they share and how they report errors are in :mod:`~statekit.cli.options`,
how they print in :mod:`~statekit.cli.output`. ``statekit reconcile`` lives beside the
trading layer (:mod:`statekit.trading.reconcile.cli`) and is imported only when one of
its commands runs.

Every command that touches a store runs all of its work inside one
``asyncio.run(...)`` and closes the store before returning. Only ``put`` may create a
store; every other command (``doctor`` included) reports a store that does not exist
as an error instead of creating an empty one. ``--version`` prints the version;
``--install-completion`` / ``--show-completion`` are typer's shell completion. A user mistake or
any :class:`~statekit.errors.StatekitError` ends the command with one line,
``error: <message>``, on stderr and exit code 1; usage errors (an unknown
option, a missing argument) exit 2 as typer does. ``--json`` prints plain JSON
on stdout for scripts; everything else is for humans (rich tables).

Nothing printed may hold a secret: store URLs are shown with
:func:`statekit.redact.redact_url`, settings with ``Settings.masked()``, and the
password or token of the URL in use is scrubbed from every error message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from statekit.cli.doctor import doctor
from statekit.cli.keys import delete, get, history, ls, put
from statekit.cli.lazy import lazy_group
from statekit.cli.migrate import migrate
from statekit.cli.options import global_options
from statekit.cli.plugins import plugins
from statekit.cli.prune import prune
from statekit.cli.serve import serve
from statekit.cli.snapshots import snapshot_app

if TYPE_CHECKING:
    from statekit.cli.options import Options
    from statekit.trading.reconcile.cli import Session

    _: type[Session] = Options  # what the reconcile commands need from ctx.obj

__all__ = ["app", "main"]

RECONCILE_HELP = "Reconciliation: intents and statuses, engine metrics, a dry-run plan, run shards."
"""``statekit.trading.reconcile.cli.HELP``, known before that module is imported."""


def _reconcile_app() -> typer.Typer:
    from statekit.trading.reconcile.cli import reconcile_app

    return reconcile_app


class _Statekit(TyperGroup):
    """The ``statekit`` group: the commands typer built from :data:`app`, then the groups
    of the layers above, imported when used."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.add_command(lazy_group(self, "reconcile", RECONCILE_HELP, _reconcile_app))


app = typer.Typer(
    name="statekit",
    help="Versioned, auditable state for trading systems: inspect and change a store.",
    cls=_Statekit,
    no_args_is_help=True,
    # typer's --install-completion / --show-completion (bash, zsh, fish, PowerShell).
    add_completion=True,
    # Plain tracebacks for real bugs; rich's pretty ones can print local variables,
    # which may hold the store URL and its password.
    pretty_exceptions_enable=False,
)
app.callback()(global_options)
app.command()(plugins)
app.command()(doctor)
app.command()(get)
app.command()(put)
app.command()(delete)
app.command()(history)
app.command()(ls)
app.command()(prune)
app.command()(migrate)
app.command()(serve)
app.add_typer(snapshot_app, name="snapshot")


def main() -> None:
    """Entry point of the ``statekit`` console script."""
    app(prog_name="statekit")
