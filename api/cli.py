"""``releasegate``: the command line. ``serve`` runs the API and the controller in one process."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer
import uvicorn

from controller import logs
from controller.settings import Settings

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Releasegate release-gating controller.")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [RELEASEGATE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [RELEASEGATE_PORT]")] = None,
    database_url: Annotated[str | None, typer.Option(help="[RELEASEGATE_DATABASE_URL]")] = None,
) -> None:
    """Serve the REST API and run the controller loop."""
    from api.app import create_app

    settings = Settings.from_env(host=host, port=port, database_url=database_url)
    logs.configure(settings.log_level, settings.log_format)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal into the previous handler;
    # this one makes that a clean exit (status 0) instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the handlers configured above (text or JSON lines)
    )


@cli.command()
def migrate(database_url: Annotated[str | None, typer.Option(help="[RELEASEGATE_DATABASE_URL]")] = None) -> None:
    """Apply database migrations and exit (for a one-off migration job)."""
    from controller.store.db import Store

    Store.open(Settings.from_env(database_url=database_url))
    typer.echo("migrated")


def main() -> None:
    cli()
