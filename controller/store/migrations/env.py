"""Alembic environment: runs on the connection ``controller.store.db.migrate`` hands over."""

from alembic import context
from sqlmodel import SQLModel

import controller.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` CLI use: build an engine from the environment's settings.
    from controller.settings import Settings
    from controller.store.db import make_engine

    connection = make_engine(Settings.from_env()).connect()

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
