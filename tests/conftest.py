"""Shared fixtures: a fake clock, and a store + API client on each real backend.

Store and API tests take ``database_url``, which runs them once on SQLite and once on a throwaway
PostgreSQL that the harness starts itself (never mocked, never skipped).
"""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from controller.clock import FakeClock
from controller.settings import Settings
from controller.store.db import Store
from tests.pg_fixtures import PgServer, pg_cluster, pg_url  # noqa: F401
from tests.pgcluster import unique_db_name
from tests.probe_servers import PrometheusServer, ScriptedServer

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # a Monday, 09:00 in New York
ADMIN_TOKEN = "rg_test-admin-token-0123456789"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated once; each test gets a copy, which is much faster than migrating again."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    store = Store.open(Settings(database_url=f"sqlite:///{path}"))
    store.engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PgServer) -> str:  # noqa: F811 (the fixture imported above, injected by name)
    """A migrated PostgreSQL database that each test clones (CREATE DATABASE ... TEMPLATE)."""
    url = pg_cluster.create_database(unique_db_name("rg_migrated"))
    store = Store.open(Settings(database_url=url))
    store.engine.dispose()
    return url.rsplit("/", 1)[1]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "releasegate.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    cluster: PgServer = request.getfixturevalue("pg_cluster")
    url = cluster.fresh_database(template=request.getfixturevalue("pg_template"))
    yield url
    cluster.drop_database(url)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, admin_token=ADMIN_TOKEN)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store.open(settings)
    yield store
    store.engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def client(settings: Settings, store: Store, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings, clock=clock, store=store, run_loop=False)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as test_client:
        yield test_client


@pytest.fixture
def health() -> Iterator[ScriptedServer]:
    """A real HTTP server on 127.0.0.1 whose health answers the test scripts."""
    server = ScriptedServer()
    yield server
    server.close()


@pytest.fixture
def prometheus() -> Iterator[PrometheusServer]:
    """A real HTTP server on 127.0.0.1 speaking the Prometheus instant-query API."""
    server = PrometheusServer()
    yield server
    server.close()


CALL_FAILED = pytest.StashKey[bool]()
"""Set on each test item: whether its call phase failed (the process fixtures print logs then)."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report
