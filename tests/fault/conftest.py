"""Fault tests: a fleet of real ``releasegate serve`` processes on one PostgreSQL database, broken on purpose.

Why it exists: SPEC §6 promises that no trigger is lost and no job is duplicated under any
interleaving, and that several API and controller processes share one database; §8 that no endpoint
answers 500. Those are claims about real processes meeting real failures: a controller SIGKILLed
mid-transaction, PostgreSQL restarting under live connections, a backend terminated while a write
waits on a lock. The tests here cause those failures, then check the product's own records.

What it must not do: mock or import the product to drive it. Processes are the e2e harness's
``ServerProcess`` (``releasegate serve --role ...``), driven over HTTP. The test reads the database
only to check what the API does not expose (generations, the raw job table), and touches it only to
hold a row lock or terminate a backend, never to write product rows.

Reuse: ``Fleet`` (the ``fleets`` fixture) starts, kills and stops processes, each tagged with its
own ``application_name`` so its PostgreSQL backends can be found; ``Database`` is the test's own
view of PostgreSQL; ``restartable_cluster`` is a private cluster that a test may halt and resume.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from tests.conftest import CALL_FAILED
from tests.e2e.conftest import CLEAN_EXIT_CODES, ServerProcess, start_server
from tests.pg_fixtures import PgServer
from tests.pgcluster import ThrowawayCluster, unique_db_name

# The roles of `releasegate serve`: an API process runs no controller loop, a controller serves no API.
API_ARGS = ("--role", "api")
CONTROLLER_ARGS = ("--role", "controller")
STOP_TIMEOUT = 20.0  # a controller finishing its batch on a loaded two-core machine


class Database:
    """The test's own connections (no pool: a restart or a terminated backend leaves nothing stale)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url, poolclass=NullPool)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()

    def wait_busy(self, application_name: str, timeout: float) -> bool:
        """Wait until a backend of one process is inside a transaction; whether one was, in time."""
        deadline = time.monotonic() + timeout
        query = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                     "AND datname = current_database() AND xact_start IS NOT NULL")
        # Autocommit: pg_stat_activity is snapshotted once per transaction.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while time.monotonic() < deadline:
                if conn.execute(query, {"name": application_name}).scalar_one() > 0:
                    return True
                time.sleep(0.005)
        return False

    def close(self) -> None:
        self.engine.dispose()


class Fleet:
    """API and controller processes on one database, started, SIGKILLed and stopped by name.

    Each process connects with ``application_name`` set to its name, so ``pg_stat_activity`` tells
    which backend is whose. A process started again under the same name gets a new log file.
    """

    def __init__(self, tmp_path: Path, database_url: str, env: Mapping[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.env = dict(env or {})
        self.started: list[ServerProcess] = []
        self.crashed: set[int] = set()  # pids we SIGKILLed on purpose

    def _env(self, name: str) -> dict[str, str]:
        url = make_url(self.database_url).update_query_dict({"application_name": name})
        return {**self.env, "RELEASEGATE_DATABASE_URL": url.render_as_string(hide_password=False)}

    def api(self, name: str) -> ServerProcess:
        """An API process, ready (``/readyz`` answered 200) when this returns."""
        server = start_server(self.tmp_path, env=self._env(name), name=name, args=API_ARGS)
        self.started.append(server)
        return server

    def controller(self, name: str) -> ServerProcess:
        """A controller process, ready when this returns; it serves only probes and ``/metrics``."""
        server = start_server(self.tmp_path, env=self._env(name), name=name, args=CONTROLLER_ARGS)
        self.started.append(server)
        return server

    def kill(self, process: ServerProcess) -> None:
        """SIGKILL: no shutdown, no rollback of its own; PostgreSQL aborts its open transactions."""
        os.kill(process.pid, signal.SIGKILL)
        process.process.wait(STOP_TIMEOUT)
        process.client.close()
        self.crashed.add(process.pid)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every live process; returns the log names of those that did not exit cleanly."""
        for process in self.started:
            if process.pid not in self.crashed:
                process.stop(STOP_TIMEOUT)
        return {
            p.log_path.name: p.returncode for p in self.started
            if p.pid not in self.crashed and (p.killed or p.returncode not in CLEAN_EXIT_CODES)
        }

    @staticmethod
    def metric(process: ServerProcess, name: str) -> float:
        """One unlabelled sample from the process's ``/metrics``."""
        exposition = process.client.get("/metrics").text
        sample = re.search(rf"^{re.escape(name)} (\S+)$", exposition, re.MULTILINE)
        assert sample is not None, f"{process.log_path.name} exports no {name}"
        return float(sample.group(1))

    @staticmethod
    def passes(process: ServerProcess) -> int:
        """Controller passes the process has finished, failed ones included."""
        return int(Fleet.metric(process, "releasegate_reconcile_pass_duration_seconds_count"))

    def logs(self, prefix: str = "") -> dict[str, str]:
        return {p.log_path.name: p.log() for p in self.started if p.log_path.name.startswith(prefix)}


MakeFleet = Callable[..., Fleet]
@pytest.fixture
def fleets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeFleet]:
    """``fleets(database_url, env)`` makes a ``Fleet``; every process is stopped after the test, and
    every log printed if it failed. A process that ignores SIGTERM fails the test."""
    made: list[Fleet] = []

    def make(database_url: str, env: Mapping[str, str] | None = None) -> Fleet:
        fleet = Fleet(tmp_path, database_url, env)
        made.append(fleet)
        return fleet

    yield make
    unclean: dict[str, int | None] = {}
    for fleet in made:
        unclean |= fleet.stop()
    if request.node.stash.get(CALL_FAILED, False):
        for fleet in made:
            for name, log in fleet.logs().items():
                print(f"----- {name} -----\n{log[-20000:]}")
    assert not unclean, f"processes that did not stop cleanly on SIGTERM (log: exit code): {unclean}"


@pytest.fixture
def pg_database(pg_cluster: PgServer, pg_template: str) -> Iterator[str]:
    """A fresh, migrated database on the session's cluster."""
    url = pg_cluster.fresh_database(template=pg_template)
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(scope="module")
def restartable_cluster() -> Iterator[ThrowawayCluster]:
    """A private throwaway cluster (never ``RELEASEGATE_TEST_PG_URL``): tests halt and resume it, and
    the rest of the suite must not notice."""
    cluster = ThrowawayCluster()
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        pytest.fail(f"PostgreSQL is required for this test: {type(exc).__name__}: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def restartable_database(restartable_cluster: ThrowawayCluster) -> Iterator[str]:
    """A fresh, empty database on the private cluster (the first process to start migrates it)."""
    url = restartable_cluster.create_database(unique_db_name("rg_fault"))
    yield url
    restartable_cluster.drop_database(url)
