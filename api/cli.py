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


@cli.command()
def agent(
    url: Annotated[str, typer.Option(envvar="RELEASEGATE_URL", help="server base URL")] = "http://127.0.0.1:8080",
    token: Annotated[str, typer.Option(envvar="RELEASEGATE_TOKEN", help="an agent token")] = "",
    job_agent: Annotated[str, typer.Option("--job-agent", envvar="RELEASEGATE_JOB_AGENT", help="id or name")] = "",
    command: Annotated[str, typer.Option(envvar="RELEASEGATE_AGENT_COMMAND", help="shell command per job")] = "true",
    poll_seconds: Annotated[float, typer.Option(help="pause between polls when idle")] = 2.0,
    heartbeat_seconds: Annotated[float, typer.Option(help="lease heartbeat period")] = 10.0,
    once: Annotated[bool, typer.Option(help="exit when no pending job is left")] = False,
) -> None:
    """A reference pull agent: claim jobs, run COMMAND with the job in RELEASEGATE_* variables, report."""
    from api.agent import Agent, AgentConfig

    if not token or not job_agent:
        raise typer.BadParameter("--token and --job-agent are required (or RELEASEGATE_TOKEN / RELEASEGATE_JOB_AGENT)")
    logs.configure("INFO")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = AgentConfig(url, token, job_agent, command, poll_seconds, heartbeat_seconds)
    handled = Agent(config).run(once=once)
    typer.echo(f"handled {handled} jobs")


def main() -> None:
    cli()
