"""``statekit serve``: the REST + WebSocket API (:mod:`statekit.api`, the api extra)."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Annotated

import typer
from rich.text import Text

from statekit.cli.options import EMPTY_URL, options
from statekit.errors import ConfigError
from statekit.redact import redact_url


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface to bind (default: api.host, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=0, max=65535, help="Port (default: api.port, 8000)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", help="Store URL to serve (default: --url, else the configured store)."
        ),
    ] = None,
) -> None:
    """Serve the REST + WebSocket API over the store until Ctrl-C (docs/api.md).

    Binds 127.0.0.1 unless told otherwise; any other address needs api.api_key.
    Exit codes: 0 stopped by Ctrl-C or SIGTERM, 1 bad configuration (e.g. a public
    --host without an API key, a busy port) or a store that cannot be opened.
    """
    opts = options(ctx)
    if store is not None:
        if not store.strip():
            opts.fail(EMPTY_URL.format(option="--store"))
        opts.url = store
    with opts.reporting():
        try:
            from statekit.api import serve as serve_api
            from statekit.api.server import loop_factory
        except ImportError as exc:
            raise ConfigError(
                f"the API needs the api extra: pip install 'statekit[api]' ({exc})",
                source="api",
            ) from None
        url, settings = opts.store_url(), opts.settings()

        def ready(address: str) -> None:
            # One unwrapped line: scripts read it to learn the address.
            typer.echo(f"serving {address} (store {redact_url(url)}); Ctrl-C to stop")

        # The loop uvicorn would pick (uvloop when installed), as `uvicorn app:app` does.
        runner = asyncio.Runner(loop_factory=loop_factory())
        with suppress(KeyboardInterrupt), runner:  # a Ctrl-C before the server took the signals
            runner.run(
                serve_api(
                    settings,
                    url=url,
                    host=host,
                    port=port,
                    ready=ready,
                    handle_signals=True,
                    configure_logging=True,
                )
            )
    opts.print(Text("stopped"))
