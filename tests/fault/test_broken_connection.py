"""A write whose database connection is cut halfway: a clear 503, nothing half-written, a retry succeeds.

Why it exists: SPEC §8 says no endpoint answers 500, and a write is all or nothing. The sharpest
test of both is a backend killed in the middle of a transaction that has already written rows. The
test holds a row lock the request needs late in its transaction (a release target its trigger must
mark), waits until PostgreSQL shows the request blocked on it with a transaction id of its own (so
it has written something), then terminates that backend with ``pg_terminate_backend``.

What it must not do: sleep and hope the request is in flight. Every step waits on what PostgreSQL
reports (``pg_stat_activity``), with a deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import text

from tests.e2e.conftest import ok, wait_for
from tests.fault.conftest import Database, MakeFleet
from tests.fault.pipeline import is_unavailable

TIMEOUT = 30.0
Doc = dict[str, Any]


def setup(admin: httpx.Client) -> Doc:
    """A target deployed through the gate (so a job is running), and an approver."""
    agent = ok(admin.post("/v1/job-agents", json={"name": "runner"}), 201)
    token = ok(admin.post("/v1/tokens", json={"name": "runner", "role": "agent", "jobAgentId": agent["id"]}), 201)
    approver = ok(admin.post("/v1/tokens", json={"name": "alice", "role": "approver"}), 201)
    system = ok(admin.post("/v1/systems", json={"name": "shop"}), 201)
    production = ok(admin.post("/v1/environments", json={
        "systemId": system["id"], "name": "production", "resourceSelector": "resource.kind == 'vm'"}), 201)
    deployment = ok(admin.post("/v1/deployments", json={"systemId": system["id"], "name": "API", "slug": "api"}), 201)
    ok(admin.put("/v1/resources", json=[{"identifier": "vm-1", "name": "vm 1", "kind": "vm"}]))
    version = ok(admin.post(f"/v1/deployments/{deployment['id']}/versions", json={"tag": "1.0.0"}), 201)
    target = ok(admin.get("/v1/release-targets", params={"deploymentId": deployment["id"]}))["items"][0]
    return {"agent_token": token["token"], "approver_token": approver["token"], "production": production["id"],
            "version": version["id"], "target": target["id"]}


@contextmanager
def holding(db: Database, sql: str, **params: Any) -> Iterator[None]:
    """The test's own open transaction holding the row locks ``sql`` takes, rolled back on exit."""
    with db.engine.connect() as conn, conn.begin() as transaction:
        conn.execute(text(sql), params)
        yield
        transaction.rollback()


def blocked_writer(db: Database, application_name: str) -> int | None:
    """The pid of a backend of ``application_name`` waiting for a lock after writing (it has a
    transaction id: an xid is assigned at the first write), or None."""
    pid: int | None = db.scalar(
        "SELECT max(pid) FROM pg_stat_activity WHERE application_name = :name AND datname = current_database() "
        "AND wait_event_type = 'Lock' AND backend_xid IS NOT NULL", name=application_name)
    return pid


def cut_mid_write(db: Database, lock_sql: str, request: Callable[[], httpx.Response], **params: Any) -> httpx.Response:
    """Hold ``lock_sql``'s locks, send ``request``, and once it waits on them having written, kill its backend."""
    with holding(db, lock_sql, **params), ThreadPoolExecutor(1) as pool:
        answer = pool.submit(request)
        pid = wait_for("the write to block on the held lock", lambda: blocked_writer(db, "api"), TIMEOUT, pause=0.02)
        assert db.scalar("SELECT pg_terminate_backend(:pid)", pid=pid) is True
        return answer.result(TIMEOUT)


def assert_unavailable(answer: httpx.Response) -> None:
    assert is_unavailable(answer), f"{answer.status_code} {answer.headers} {answer.text}"
    assert "database unavailable" in answer.json()["detail"][0]["msg"]


def test_a_write_whose_backend_is_killed_answers_503_and_leaves_nothing_half_written(
    pg_database: str, fleets: MakeFleet
) -> None:
    fleet = fleets(pg_database)
    api = fleet.api("api")  # no controller: only the test's requests change the database
    world = setup(api.client)
    agent = api.new_client(world["agent_token"])
    approver = api.new_client(world["approver_token"])
    db = Database(pg_database)
    target_locked = "SELECT 1 FROM release_target WHERE id = :target FOR SHARE"
    try:
        gate = ok(agent.post("/v1/gate", json={
            "deployment": "api", "environment": "production", "resource": "vm-1", "version": "1.0.0"}))
        assert gate["outcome"] == "go"
        job_id = gate["job"]["id"]

        def generation() -> int:
            value: int = db.scalar("SELECT dirty_generation FROM release_target WHERE id = :t", t=world["target"])
            return value

        def audited(entity_type: str) -> int:
            count: int = db.scalar("SELECT count(*) FROM audit_log WHERE entity_type = :e", e=entity_type)
            return count

        # A job report: the job's update and its audit entry are written, then the trigger waits.
        before = generation(), audited("job")
        report = lambda: agent.patch(f"/v1/jobs/{job_id}", json={"status": "successful"})  # noqa: E731
        assert_unavailable(cut_mid_write(db, target_locked, report, target=world["target"]))
        assert ok(agent.get(f"/v1/jobs/{job_id}"))["status"] == "inProgress"
        assert (generation(), audited("job")) == before, "the cut report left something behind"
        assert ok(report())["status"] == "successful"
        assert (generation(), audited("job")) == (before[0] + 1, before[1] + 1)

        # An approval: the record and its audit entry are written, then the trigger waits.
        body = {"versionId": world["version"], "environmentId": world["production"], "status": "approved"}
        submit = lambda: approver.post("/v1/approvals", json=body)  # noqa: E731
        before = generation(), audited("approval")
        assert_unavailable(cut_mid_write(db, target_locked, submit, target=world["target"]))
        assert ok(api.client.get("/v1/approvals", params={"versionId": world["version"]}))["items"] == []
        assert (generation(), audited("approval")) == before, "the cut approval left something behind"
        assert ok(submit(), 201)["user"] == "alice"
        assert (generation(), audited("approval")) == (before[0] + 1, before[1] + 1)

        # The server lost two pooled connections and noticed nothing else: it is still ready.
        assert api.client.get("/readyz").status_code == 200
    finally:
        agent.close()
        approver.close()
        db.close()
