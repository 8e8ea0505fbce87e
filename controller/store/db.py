"""Engines, sessions and schema migration for SQLite (embedded default) and PostgreSQL.

Migrations are Alembic's and run on start. On PostgreSQL they run under a transaction-level advisory
lock, so replicas starting together migrate once instead of racing. With ``migrate = false`` a separate
job (``releasegate migrate``) applies them, and a process only checks that the schema is not older
than its code, refusing to start rather than failing on the first query.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from sqlalchemy import Engine, event, text
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine

from controller.settings import Settings
from controller.store import writers

MIGRATIONS = Path(__file__).with_name("migrations")
# An arbitrary constant: the advisory lock key that serialises migrations across processes.
MIGRATION_LOCK_KEY = 0x52656C67
# How long a SQLite writer waits for the write lock (other processes: SQLite's busy timeout; other
# threads of this one: controller/store/writers.py) before failing with "database is locked".
SQLITE_BUSY_SECONDS = 30.0


def _json_default(value: Any) -> str:
    """JSON columns take documents as they are built, timestamps included: one C-level encoding,
    instead of a Python walk converting them first (a decision document per target and pass)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_JSON = partial(json.dumps, default=_json_default)


def make_engine(settings: Settings) -> Engine:
    url = settings.database_url
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        json_serializer=_JSON,
    )


def _sqlite_engine(url: str) -> Engine:
    memory = url in ("sqlite://", "sqlite:///:memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS},
                              "json_serializer": _JSON}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        kwargs["connect_args"]["factory"] = writers.QueuedConnection
    engine = create_engine(url, **kwargs)
    if not memory:
        writers.install(engine, SQLITE_BUSY_SECONDS)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call from several processes at once."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class SchemaNotCurrent(RuntimeError):
    """The database lacks migrations this code needs, and this process is not to apply them."""


def pending_migrations(engine: Engine) -> list[str]:
    """Revisions this code has that the database lacks, oldest first.

    Empty when the schema is current, or newer than this code: during a rolling upgrade whose migration
    job has already run, old replicas keep running, which assumes that migrations stay backward
    compatible for one release.
    """
    script = ScriptDirectory.from_config(alembic_config())
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    try:
        missing = [r.revision for r in script.iterate_revisions(script.get_current_head(), current)]
    except RevisionError:  # a revision this code does not know: the database is ahead of it
        return []
    return missing[::-1]


def require_current_schema(engine: Engine) -> None:
    missing = pending_migrations(engine)
    if missing:
        raise SchemaNotCurrent(
            f"the database lacks migrations {', '.join(missing)}; run `releasegate migrate` first "
            "(or let this process apply them with RELEASEGATE_MIGRATE=true)"
        )


class Store:
    """The engine plus the unit-of-work every shell component (API, loop) writes through."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """Connect, then migrate or (``settings.migrate`` false) check the schema: ``SchemaNotCurrent``."""
        store = cls(make_engine(settings))
        try:
            if settings.migrate:
                migrate(store.engine)
            else:
                require_current_schema(store.engine)
        except BaseException:
            store.engine.dispose()
            raise
        return store

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.session() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
