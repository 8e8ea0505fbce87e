"""Concurrency on real PostgreSQL: controller processes, claims and gate calls racing each other.

Why it exists: SPEC §6 promises that two controller processes never evaluate one target at the same
time (``FOR UPDATE SKIP LOCKED``), never create two jobs for one (target, version, attempt), never
lose a trigger that lands mid-pass, and that a claim or a ``go`` is handed out exactly once. Those
are properties of interleavings, so they are tested with real processes and threads on a real
throwaway PostgreSQL cluster, not with mocks.

The controllers are separate OS processes (``sys.executable -c``) running the product's
``Reconciler.run_pass`` in a loop. They record, per batch, the targets they held and the generation
each one had, between the claim returning and the batch's statements being flushed (an interval
strictly inside the time the row locks were held), and every "job already exists" record the
reconciler logs (the unique constraint catching a duplicate, which must never even be needed).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from api.app import create_app
from controller.auth import Principal, Role
from controller.clock import FakeClock
from controller.settings import Settings
from controller.store import jobs as job_store
from controller.store.db import Store
from controller.store.inventory import Context
from controller.store.jobs import expire_leases
from controller.store.reconciler import Reconciler
from controller.store.tables import JobRow
from tests.conftest import ADMIN_TOKEN, T0
from tests.pg_fixtures import PgServer

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESS_TIMEOUT = 120.0
STORM_ROUNDS = 200  # transactions of the trigger storm, three random targets each

# A controller process: waits for "go" on stdin, runs passes until the stop file exists, writes
# what it saw to the output file. The interval [claimedNs, doneNs] of a batch lies inside the time
# its row locks were held: after claim_due returned, before the commit (everything is flushed by
# then, the last per-target UPDATE autoflushes).
CONTROLLER = r"""
import json, logging, os, sys, time
from datetime import UTC, datetime
from controller.settings import Settings
from controller.store.db import Store
from controller.store.reconciler import Reconciler

url, batch_size, stop_file, out_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
duplicates = []

class Duplicates(logging.Handler):
    def emit(self, record):
        duplicates.append(record.getMessage())

reconciler_log = logging.getLogger("controller.store.reconciler")
reconciler_log.setLevel(logging.INFO)
reconciler_log.addHandler(Duplicates())
batches = []

class Recording(Reconciler):
    def _process(self, session, claimed, now, result):
        batch = {"claimedNs": time.monotonic_ns(), "seen": {t.id: t.dirty_generation for t in claimed}}
        super()._process(session, claimed, now, result)
        batch["doneNs"] = time.monotonic_ns()
        batches.append(batch)

store = Store.open(Settings(database_url=url))
reconciler = Recording(store, batch_size=batch_size)
print("ready", flush=True)
sys.stdin.readline()
summary = {"passes": 0, "evaluated": 0, "created": 0, "errors": []}
while not os.path.exists(stop_file):
    try:
        result = reconciler.run_pass(datetime.now(UTC))
    except Exception as exc:  # reported, and the test fails on it
        summary["errors"].append(f"{type(exc).__name__}: {exc}")
        continue
    summary["passes"] += 1
    summary["evaluated"] += result.evaluated
    summary["created"] += result.jobs_created
summary |= {"duplicates": duplicates, "batches": batches}
with open(out_file, "w") as out:
    json.dump(summary, out)
"""

# A trigger storm: bumps random targets through the product's own trigger code, one small
# transaction at a time, and records each bump as (target, generation written, when committed).
STORM = r"""
import json, random, sys, time
from sqlmodel import col, select
from controller.settings import Settings
from controller.store import triggers
from controller.store.db import Store
from controller.store.tables import ReleaseTargetRow

url, ids_file, rounds, out_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ids = json.load(open(ids_file))
rng = random.Random(20260302)
store = Store.open(Settings(database_url=url))
print("ready", flush=True)
sys.stdin.readline()
bumps, errors = [], []
for _ in range(rounds):
    chosen = sorted(rng.sample(ids, 3))
    try:
        with store.transaction() as session:
            triggers.mark_ids(session, chosen)
            written = list(session.exec(select(ReleaseTargetRow.id, ReleaseTargetRow.dirty_generation)
                                        .where(col(ReleaseTargetRow.id).in_(chosen))))
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        continue
    at = time.monotonic_ns()
    bumps.extend([target_id, generation, at] for target_id, generation in written)
with open(out_file, "w") as out:
    json.dump({"bumps": bumps, "errors": errors}, out)
"""


# -- world -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    url: str
    agent_id: str
    agent_token: str
    target_ids: list[str]
    version_id: str


def build_world(url: str, targets: int) -> World:
    """One deployment with a job agent, ``targets`` resources in one environment, one ready version,
    no policy: every target is dirty and its decision is ``go``."""
    app = create_app(Settings(database_url=url, admin_token=ADMIN_TOKEN), run_loop=False)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        agent = created(admin.post("/v1/job-agents", json={"name": "runner"}))
        token = created(admin.post("/v1/tokens", json={"name": "runner", "role": "agent", "jobAgentId": agent["id"]}))
        system = created(admin.post("/v1/systems", json={"name": "payments"}))
        created(admin.post("/v1/environments", json={
            "systemId": system["id"], "name": "production", "resourceSelector": "resource.kind == 'vm'"}))
        deployment = created(admin.post("/v1/deployments", json={
            "systemId": system["id"], "name": "API", "slug": "api", "jobAgentId": agent["id"]}))
        upsert = admin.put("/v1/resources", json=[
            {"identifier": f"vm-{i:04d}", "name": f"vm {i}", "kind": "vm"} for i in range(targets)])
        assert upsert.status_code == 200, upsert.text
        version = created(admin.post(f"/v1/deployments/{deployment['id']}/versions", json={"tag": "1.0.0"}))
    app.state.store.engine.dispose()
    with connect(url) as conn:
        target_ids = list(conn.execute(text("SELECT id FROM release_target ORDER BY id")).scalars())
    assert len(target_ids) == targets
    return World(url, agent["id"], token["token"], target_ids, version["id"])


def created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def connect(url: str) -> Iterator[Connection]:
    """A short-lived connection of the test's own, outside the product's pools."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def job_counts(url: str) -> Counter[tuple[str, str, int]]:
    with connect(url) as conn:
        rows = conn.execute(text("SELECT release_target_id, version_id, attempt FROM job"))
        return Counter((t, v, a) for t, v, a in rows)


def generations(url: str) -> dict[str, tuple[int, int]]:
    with connect(url) as conn:
        rows = conn.execute(text("SELECT id, dirty_generation, evaluated_generation FROM release_target"))
        return {target_id: (dirty, evaluated) for target_id, dirty, evaluated in rows}


@pytest.fixture
def pg_database(pg_cluster: PgServer, pg_template: str) -> Iterator[str]:
    url = pg_cluster.fresh_database(template=pg_template)
    yield url
    pg_cluster.drop_database(url)


# -- helper processes ------------------------------------------------------------------------------


class Child:
    """``python -c SCRIPT args`` that prints "ready", starts on a line on stdin, and writes JSON."""

    def __init__(self, script: str, args: list[str], out: Path, log: Path) -> None:
        self.out, self.log = out, log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-c", script, *args, str(out)], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=sink, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == b"ready", f"child did not start: {line!r}\n{self.log.read_text()}"

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def result(self) -> dict[str, Any]:
        try:
            code = self.process.wait(PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        assert code == 0, f"child exited {code}:\n{self.log.read_text()}"
        body: dict[str, Any] = json.loads(self.out.read_text())
        return body

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_all(children: list[Child]) -> None:
    for child in children:
        child.wait_ready()
    for child in children:
        child.go()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def all_clean(url: str) -> bool:
    return all(dirty == evaluated for dirty, evaluated in generations(url).values())


# -- checks ----------------------------------------------------------------------------------------


def assert_one_job_per_target(world: World) -> None:
    counts = job_counts(world.url)
    per_target = Counter(target for target, _, _ in counts)
    assert set(per_target) == set(world.target_ids), "some target got no job"
    assert max(per_target.values()) == 1, f"targets with several jobs: {[t for t, n in per_target.items() if n > 1]}"
    assert set(counts) == {(t, world.version_id, 1) for t in world.target_ids}


def assert_never_evaluated_at_once(results: list[dict[str, Any]]) -> int:
    """No target was held by two processes at overlapping instants (monotonic_ns is system-wide).
    Returns how many targets both processes evaluated (at different times)."""
    held: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for process, result in enumerate(results):
        for batch in result["batches"]:
            for target_id in batch["seen"]:
                held[target_id].append((batch["claimedNs"], batch["doneNs"], process))
    overlaps = set()
    for target_id, intervals in held.items():
        latest_end, holder = 0, -1
        for start, end, process in sorted(intervals):
            if start < latest_end and process != holder:
                overlaps.add(target_id)
            if end > latest_end:
                latest_end, holder = end, process
    assert not overlaps, f"{len(overlaps)} targets were evaluated by both processes at once"
    return sum(1 for intervals in held.values() if len({process for _, _, process in intervals}) > 1)


def assert_controllers_clean(results: list[dict[str, Any]]) -> None:
    for result in results:
        assert result["errors"] == [], result["errors"]
        # The reconciler logs "job already exists" when the unique constraint caught a duplicate.
        assert result["duplicates"] == [], f"the unique constraint had to catch duplicates: {result['duplicates']}"


def run_controllers(world: World, tmp_path: Path, *, batch_size: int, storm_rounds: int = 0) -> tuple[
        list[dict[str, Any]], dict[str, Any] | None]:
    stop = tmp_path / "stop"
    controllers = [
        Child(CONTROLLER, [world.url, str(batch_size), str(stop)], tmp_path / f"c{i}.json", tmp_path / f"c{i}.log")
        for i in range(2)
    ]
    children = list(controllers)
    storm = None
    if storm_rounds:
        ids_file = tmp_path / "ids.json"
        ids_file.write_text(json.dumps(world.target_ids))
        storm = Child(STORM, [world.url, str(ids_file), str(storm_rounds)], tmp_path / "storm.json",
                      tmp_path / "storm.log")
        children.append(storm)
    try:
        start_all(children)
        storm_result = storm.result() if storm else None
        # Level-based: the controllers keep passing until no target is dirty (the storm is over).
        wait_until(lambda: all_clean(world.url) and sum(job_counts(world.url).values()) >= len(world.target_ids),
                   PROCESS_TIMEOUT, "the controllers to evaluate every target")
        stop.touch()
        return [c.result() for c in controllers], storm_result
    finally:
        for child in children:
            child.kill()


# -- tests -----------------------------------------------------------------------------------------


def test_two_controller_processes_create_exactly_one_job_per_target(pg_database: str, tmp_path: Path) -> None:
    world = build_world(pg_database, 300)

    results, _ = run_controllers(world, tmp_path, batch_size=25)

    assert_controllers_clean(results)
    assert_one_job_per_target(world)
    assert_never_evaluated_at_once(results)
    # Both processes did real work: with one idle, this test would prove nothing about SKIP LOCKED.
    assert all(r["created"] > 0 for r in results), [r["created"] for r in results]
    assert sum(r["created"] for r in results) == 300
    assert all(dirty == evaluated >= 1 for dirty, evaluated in generations(world.url).values())
    with connect(world.url) as conn:
        logged = set(conn.execute(text("SELECT DISTINCT release_target_id FROM decision_log")).scalars())
        go = conn.execute(text("SELECT release_target_id, count(*) FROM decision_log WHERE outcome = 'go' "
                               "GROUP BY release_target_id")).all()
    assert logged == set(world.target_ids), "every target was evaluated and its decision logged"
    # Two processes evaluating one target at once would both log its `go` (same previous key).
    assert {n for _, n in go} == {1} and len(go) == 300


def test_a_trigger_storm_during_two_controllers_loses_no_trigger(pg_database: str, tmp_path: Path) -> None:
    world = build_world(pg_database, 300)

    results, storm = run_controllers(world, tmp_path, batch_size=25, storm_rounds=STORM_ROUNDS)

    assert storm is not None and storm["errors"] == [], storm and storm["errors"]
    assert_controllers_clean(results)
    assert_one_job_per_target(world)
    # Re-triggered targets were picked up by either process: the no-overlap check had material.
    assert assert_never_evaluated_at_once(results) > 0
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)  # target -> [(generation seen, when)]
    for result in results:
        for batch in result["batches"]:
            for target_id, generation in batch["seen"].items():
                seen[target_id].append((generation, batch["claimedNs"]))
    bumps = storm["bumps"]
    assert len(bumps) == 3 * STORM_ROUNDS
    # The storm overlapped the controllers' work: many of its bumps landed after the first batch had
    # committed, on targets being or already evaluated (the triggers a pass could lose).
    first_done = min(b["doneNs"] for r in results for b in r["batches"])
    last_done = max(b["doneNs"] for r in results for b in r["batches"])
    assert sum(1 for _, _, at in bumps if first_done < at < last_done) > STORM_ROUNDS // 2
    # No lost trigger: every bump was seen by a later evaluation of its target...
    lost = [(t, g) for t, g, _ in bumps if max(s for s, _ in seen[t]) < g]
    assert not lost, f"{len(lost)} triggers were never evaluated: {lost[:5]}"
    # ...and every clean target's last recorded evaluation saw its final generation.
    final = generations(world.url)
    for target_id, (dirty, evaluated) in final.items():
        assert dirty == evaluated
        assert max(s for s, _ in seen[target_id]) == dirty, target_id

    # A final pass by a fresh controller (which sweeps everything) finds nothing to do but look.
    store = Store.open(Settings(database_url=world.url))
    try:
        result = Reconciler(store).run_pass(datetime.now(UTC))
    finally:
        store.engine.dispose()
    assert (result.evaluated, result.jobs_created) == (300, 0)
    assert all(dirty == evaluated for dirty, evaluated in generations(world.url).values())
    assert_one_job_per_target(world)


def test_concurrent_claims_hand_each_job_out_exactly_once(pg_database: str) -> None:
    world = build_world(pg_database, 50)
    settings = Settings(database_url=world.url, admin_token=ADMIN_TOKEN, db_pool_size=25, db_max_overflow=10)
    app = create_app(settings, run_loop=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        app.state.loop.run_once()
        client.headers["Authorization"] = f"Bearer {world.agent_token}"
        pending = client.get(f"/v1/job-agents/{world.agent_id}/jobs", params={"status": "pending"}).json()["items"]
        job_ids = [j["id"] for j in pending]
        assert len(job_ids) == 50
        start = threading.Barrier(20)

        def claim_all(worker: int) -> list[tuple[str, int]]:
            order = list(job_ids)
            random.Random(worker).shuffle(order)
            start.wait()
            return [(job_id, client.post(f"/v1/jobs/{job_id}/claim").status_code) for job_id in order]

        with ThreadPoolExecutor(20) as pool:
            answers = [a for worker in pool.map(claim_all, range(20)) for a in worker]

        by_status = Counter(code for _, code in answers)
        assert by_status == {200: 50, 409: 950}, by_status
        winners = Counter(job_id for job_id, code in answers if code == 200)
        assert winners == dict.fromkeys(job_ids, 1)
        for job_id in job_ids:
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "inProgress" and job["startedAt"] is not None
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        claims = Counter(
            entry["entityId"] for entry in all_pages(client, "/v1/audit", {"entityType": "job"})
            if entry["action"] == "claim"
        )
        assert claims == dict.fromkeys(job_ids, 1), "each job moved to inProgress exactly once"


def test_concurrent_gate_calls_for_one_target_give_exactly_one_go(pg_database: str) -> None:
    world = build_world(pg_database, 3)
    settings = Settings(database_url=world.url, admin_token=ADMIN_TOKEN, db_pool_size=20, db_max_overflow=10)
    app = create_app(settings, run_loop=False)
    body = {"deployment": "api", "environment": "production", "resource": "vm-0001", "version": "1.0.0"}
    with TestClient(app, headers={"Authorization": f"Bearer {world.agent_token}"}) as client:
        start = threading.Barrier(16)

        def ask(_: int) -> dict[str, Any]:
            start.wait()
            response = client.post("/v1/gate", json=body)
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, range(16)))

        outcomes = Counter(a["outcome"] for a in answers)
        assert outcomes["go"] == 1, outcomes
        go = next(a for a in answers if a["outcome"] == "go")
        assert go["job"]["status"] == "inProgress"
        for answer in answers:
            if answer is not go:
                assert answer["outcome"] == "wait" and answer["retryAfterSeconds"] >= 1, answer
                assert any("JobActive" in reason for reason in answer["reasons"]), answer["reasons"]
        jobs = client.get(f"/v1/job-agents/{world.agent_id}/jobs").json()["items"]
        assert [(j["id"], j["status"]) for j in jobs] == [(go["job"]["id"], "inProgress")]
    with connect(world.url) as conn:
        assert conn.execute(text("SELECT count(*) FROM job")).scalar_one() == 1
        created_jobs = "SELECT count(*) FROM audit_log WHERE entity_type = 'job' AND action = 'create'"
        assert conn.execute(text(created_jobs)).scalar_one() == 1


def all_pages(client: TestClient, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page = client.get(path, params={**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}).json()
        yield from page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            return


# -- a report and a lease expiry crossing ----------------------------------------------------------
#
# Each test holds one side's transaction open (flushed, not committed) and starts the other side,
# waits until PostgreSQL shows it blocked on a row lock, then commits: the second writer must act on
# what the first committed, not on what it had read before. Nothing leaves a terminal status.


def lock_waiters(url: str) -> int:
    with connect(url) as conn:
        waiting: int = conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )).scalar_one()
        return waiting


def claimed_job(world: World, app: Any, client: TestClient) -> str:
    app.state.loop.run_once()
    pending = client.get(f"/v1/job-agents/{world.agent_id}/jobs", params={"status": "pending"}).json()["items"]
    assert len(pending) == 1
    job_id: str = pending[0]["id"]
    assert client.post(f"/v1/jobs/{job_id}/claim").status_code == 200
    return job_id


def test_a_report_racing_a_lease_expiry_cannot_revive_the_lost_job(pg_database: str) -> None:
    world = build_world(pg_database, 1)
    clock = FakeClock(T0)
    app = create_app(Settings(database_url=world.url, admin_token=ADMIN_TOKEN), clock=clock, run_loop=False)
    with TestClient(app, headers={"Authorization": f"Bearer {world.agent_token}"}) as client:
        job_id = claimed_job(world, app, client)
        clock.advance(timedelta(minutes=5))  # far past the lease
        expiring = app.state.store.session()
        try:
            assert [job.id for job in expire_leases(expiring, clock.now())] == [job_id]
            expiring.flush()
            with ThreadPoolExecutor(1) as pool:
                report = pool.submit(client.patch, f"/v1/jobs/{job_id}", json={"status": "successful"})
                wait_until(lambda: lock_waiters(world.url) > 0, 30, "the report to wait for the expiry's lock")
                expiring.commit()
                answer = report.result(30)
        finally:
            expiring.close()
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "lost", "a lost job was revived by a report that read it before it was lost"
    assert answer.status_code == 409, answer.text


def test_a_lease_expiry_racing_a_report_cannot_overwrite_its_success(pg_database: str) -> None:
    world = build_world(pg_database, 1)
    clock = FakeClock(T0)
    app = create_app(Settings(database_url=world.url, admin_token=ADMIN_TOKEN), clock=clock, run_loop=False)
    agent = Principal(token_id="test", name="runner", role=Role.AGENT, job_agent_id=world.agent_id)
    with TestClient(app, headers={"Authorization": f"Bearer {world.agent_token}"}) as client:
        job_id = claimed_job(world, app, client)
        clock.advance(timedelta(minutes=5))
        store = app.state.store
        reporting = store.session()
        try:
            row = reporting.get(JobRow, job_id)
            assert row is not None
            job_store.report(Context(reporting, agent, clock.now()), row, {"status": "successful"},
                             timedelta(seconds=60))
            reporting.flush()
            with ThreadPoolExecutor(1) as pool:
                passing = pool.submit(Reconciler(store).run_pass, clock.now())
                wait_until(lambda: lock_waiters(world.url) > 0, 30, "the pass to wait for the report's lock")
                reporting.commit()
                result = passing.result(30)
        finally:
            reporting.close()
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "successful", "a lease expiry overwrote a success reported before it"
    assert result.leases_expired == 0
