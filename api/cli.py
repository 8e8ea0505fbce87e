"""``releasegate``: the command line. ``serve`` runs the API, the controller loop, or both (``--role``).

Configuration problems end the process here with one line naming the setting and exit status 2, and
an unusable database with status 1, rather than a traceback from deep inside start-up.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn

from controller import logs
from controller.settings import ProcessRole, Settings, SettingsError

if TYPE_CHECKING:  # the database layer loads lazily: `releasegate agent` does not need it
    from controller.store.db import Store

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Releasegate release-gating controller.")


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file; the environment overrides it [RELEASEGATE_CONFIG]"),
]
DatabaseOption = Annotated[str | None, typer.Option(help="[RELEASEGATE_DATABASE_URL]")]


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [RELEASEGATE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [RELEASEGATE_PORT]")] = None,
    database_url: DatabaseOption = None,
    role: Annotated[
        ProcessRole | None,
        typer.Option(help="all: API and controller loop; api: no loop; controller: the loop, probes and "
                     "/metrics only [RELEASEGATE_ROLE; default all]"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the REST API, run the controller loop, or both (the default)."""
    from api.app import create_app

    settings = _settings(config, host=host, port=port, database_url=database_url, role=role)
    logs.configure(settings.log_level, settings.log_format)
    store = _open_store(settings)
    # uvicorn shuts down gracefully on SIGTERM (in-flight requests finish, then the lifespan stops the
    # loop, which lets a running pass commit), then re-raises the signal into the previous handler;
    # this one makes that a clean exit (status 0) instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(
            create_app(settings, store=store),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            log_config=None,  # keep the handlers configured above (text or JSON lines)
        )
    finally:
        store.engine.dispose()  # close pooled connections rather than drop them


@cli.command()
def migrate(database_url: DatabaseOption = None, config: ConfigOption = None) -> None:
    """Apply database migrations and exit (for a one-off migration job), whatever RELEASEGATE_MIGRATE says."""
    settings = _settings(config, database_url=database_url)
    logs.configure(settings.log_level, settings.log_format)
    _open_store(dataclasses.replace(settings, migrate=True)).engine.dispose()
    typer.echo("migrated")


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return Settings.from_env(config=config, **overrides)
    except SettingsError as exc:
        typer.echo(f"releasegate: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def _open_store(settings: Settings) -> Store:
    """Connect and migrate (or check the schema); a clear line and status 1 if that cannot be done."""
    from sqlalchemy.exc import OperationalError

    from controller.store.db import SchemaNotCurrent, Store

    try:
        return Store.open(settings)
    except SchemaNotCurrent as exc:
        typer.echo(f"releasegate: {exc}", err=True)
    except OperationalError as exc:
        typer.echo(f"releasegate: cannot use the database: {exc.orig or exc}".rstrip(), err=True)
    raise typer.Exit(1)


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
