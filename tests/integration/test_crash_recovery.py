"""A controller killed mid-pass loses nothing and repeats nothing (SPEC §6), on SQLite and PostgreSQL.

Why it exists: the reconciler commits one batch at a time (the decision, its jobs and the generation
it saw, together), so a crash can only ever cut between batches. This kills a real controller
process with SIGKILL (no cleanup, no atexit, no rollback of its own) while it is inside a large
pass, after some batches committed and before the last one, then lets a fresh controller finish.

What it must not do: stop the process politely, or let the pass finish before the kill; it asserts
both ends (some batches committed, not all) so the test cannot pass vacuously.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from api.app import create_app
from controller.settings import Settings
from controller.store.db import Store
from controller.store.reconciler import Reconciler
from tests.conftest import ADMIN_TOKEN

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGETS = 600
BATCH = 25  # 24 batches: the kill lands after the second and well before the last
KILL_AFTER_JOBS = 2 * BATCH
TIMEOUT = 120.0

CONTROLLER = r"""
import sys
from datetime import UTC, datetime
from controller.settings import Settings
from controller.store.db import Store
from controller.store.reconciler import Reconciler

store = Store.open(Settings(database_url=sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
result = Reconciler(store, batch_size=int(sys.argv[2])).run_pass(datetime.now(UTC))
print("finished", result, flush=True)
"""


def build_world(url: str, targets: int) -> str:
    """One deployment with a job agent and a ready version over ``targets`` resources, no policy:
    every target is dirty and wants exactly one job. Returns the version id."""
    app = create_app(Settings(database_url=url, admin_token=ADMIN_TOKEN), run_loop=False)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        agent = admin.post("/v1/job-agents", json={"name": "runner"}).json()
        system = admin.post("/v1/systems", json={"name": "payments"}).json()
        admin.post("/v1/environments", json={
            "systemId": system["id"], "name": "production", "resourceSelector": "resource.kind == 'vm'"})
        deployment = admin.post("/v1/deployments", json={
            "systemId": system["id"], "name": "API", "slug": "api", "jobAgentId": agent["id"]}).json()
        upsert = admin.put("/v1/resources", json=[
            {"identifier": f"vm-{i:04d}", "name": f"vm {i}", "kind": "vm"} for i in range(targets)])
        assert upsert.status_code == 200, upsert.text
        version = admin.post(f"/v1/deployments/{deployment['id']}/versions", json={"tag": "1.0.0"})
        assert version.status_code == 201, version.text
    app.state.store.engine.dispose()
    version_id: str = version.json()["id"]
    return version_id


class Database:
    """The test's own view of the database, outside the product's pools."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)

    def rows(self, sql: str) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql)))

    def count(self, sql: str) -> int:
        with self.engine.connect() as conn:
            value: int = conn.execute(text(sql)).scalar_one()
            return value


def kill_mid_pass(url: str, db: Database, log_path: Path) -> int:
    """Start a controller pass in a child process and SIGKILL it once some batches have committed.
    Returns the number of jobs committed when it died."""
    with log_path.open("wb") as log:
        child = subprocess.Popen([sys.executable, "-c", CONTROLLER, url, str(BATCH)], cwd=REPO_ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == b"ready", log_path.read_text()
        child.stdin.write(b"go\n")
        child.stdin.flush()
        deadline = time.monotonic() + TIMEOUT
        while db.count("SELECT count(*) FROM job") < KILL_AFTER_JOBS:
            assert child.poll() is None, f"the pass ended before it could be killed:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, "the controller made no progress"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(TIMEOUT) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return db.count("SELECT count(*) FROM job")


def test_a_controller_killed_mid_pass_loses_nothing_and_repeats_nothing(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    version_id = build_world(database_url, TARGETS)
    db = Database(database_url)
    try:
        committed = kill_mid_pass(database_url, db, tmp_path / "controller.log")

        # It died inside the pass: some batches committed, and not all.
        assert KILL_AFTER_JOBS <= committed < TARGETS
        # Batches are atomic: every batch of BATCH targets wants BATCH jobs, so a torn batch would
        # leave a count that is not a multiple of BATCH...
        assert committed % BATCH == 0, committed
        # ...and a target has a job exactly when its evaluation was recorded, and its decision logged.
        state = db.rows("SELECT t.id, t.dirty_generation = t.evaluated_generation, count(j.id) FROM release_target t "
                        "LEFT JOIN job j ON j.release_target_id = t.id GROUP BY t.id, t.dirty_generation, "
                        "t.evaluated_generation")
        assert len(state) == TARGETS
        assert all(clean == (jobs == 1) and jobs <= 1 for _, clean, jobs in state)
        assert db.count("SELECT count(DISTINCT release_target_id) FROM decision_log") == committed

        # A fresh controller finishes the work. On PostgreSQL the dead session's row locks may
        # outlive it by a moment (SKIP LOCKED passes over them), so run passes until one finds
        # nothing to do, as the loop would.
        caplog.set_level(logging.INFO, logger="controller.store.reconciler")
        store = Store.open(Settings(database_url=database_url))
        try:
            reconciler = Reconciler(store, batch_size=BATCH)
            created = 0
            deadline = time.monotonic() + TIMEOUT
            while True:
                result = reconciler.run_pass(datetime.now(UTC))
                created += result.jobs_created
                if result.evaluated == 0:
                    break
                assert time.monotonic() < deadline
        finally:
            store.engine.dispose()

        assert created == TARGETS - committed, "exactly the missing jobs were created"
        assert not [r for r in caplog.records if r.getMessage() == "job already exists"], \
            "the unique constraint had to catch a duplicate"
        jobs = Counter(db.rows("SELECT release_target_id, version_id, attempt FROM job"))
        targets = [row[0] for row in db.rows("SELECT id FROM release_target")]
        assert jobs == {(t, version_id, 1): 1 for t in targets}, "one job per target, none duplicated or missing"
        assert db.count("SELECT count(*) FROM release_target WHERE dirty_generation <> evaluated_generation") == 0
    finally:
        db.engine.dispose()
