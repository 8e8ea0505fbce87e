"""pytest fixtures for real PostgreSQL.

Import them into a conftest::

    from tests.pg_fixtures import pg_cluster, pg_url  # noqa: F401

or load the module as a plugin (``pytest_plugins = ["tests.pg_fixtures"]`` in
the root conftest, or in a test module).

* ``pg_cluster`` (session): the server.  With ``RELEASEGATE_TEST_PG_URL`` set
  (admin URL, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``)
  that server is used and left running; otherwise a throwaway cluster is
  started on 127.0.0.1 (installing PostgreSQL if missing) and removed at the
  end of the session.  Under pytest-xdist every worker gets its own cluster.
  Offers ``admin_url``, ``create_database(name)``, ``drop_database(name)``,
  ``fresh_database()``.
* ``pg_url`` (function): SQLAlchemy URL of a fresh, empty, uniquely named
  database, dropped ``WITH (FORCE)`` after the test.

PostgreSQL being unavailable is a test failure, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pgcluster import ExternalServer, ThrowawayCluster

PG_URL_ENV = "RELEASEGATE_TEST_PG_URL"

PgServer = ThrowawayCluster | ExternalServer


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgServer]:
    admin_url = os.environ.get(PG_URL_ENV, "").strip()
    server: PgServer = ExternalServer(admin_url) if admin_url else ThrowawayCluster()
    try:
        server.start()
    except Exception as exc:
        server.stop()
        where = f"{PG_URL_ENV} server" if admin_url else "throwaway PostgreSQL cluster"
        pytest.fail(
            f"PostgreSQL is required for this test but the {where} is unavailable:\n"
            f"{type(exc).__name__}: {exc}",
            pytrace=False,
        )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_cluster: PgServer) -> Iterator[str]:
    try:
        url = pg_cluster.fresh_database()
    except Exception as exc:
        pytest.fail(f"could not create a fresh PostgreSQL database: {exc}", pytrace=False)
    yield url
    pg_cluster.drop_database(url)
