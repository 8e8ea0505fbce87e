"""Many writers at once through two API processes: approvals, gate calls and claims, counted exactly.

Why it exists: SPEC §6 and §1 make promises about concurrent callers that only real processes on a
real database can break: an approval is one record per (version, environment, user), however many
times one person submits at once; only one gate call per target gets ``go`` while its job is active;
a job is claimed exactly once and every other claim gets 409. The callers here are threads released
together by a barrier, spread over two ``releasegate serve --role api`` processes that share one
PostgreSQL database with a controller process.

What it must not do: accept "some" or "at least": every count is exact, and every answer that is
not the expected one (a 500, a 503, an unexpected 409) fails the test.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from benchmarks import gate_world
from tests.e2e.conftest import ServerProcess, ok, wait_for
from tests.fault.conftest import Database, MakeFleet

APPROVERS = 6
SUBMISSIONS = 4  # concurrent submissions by each approver
GATE_TARGETS = 20
GATE_CALLS = 6  # concurrent gate calls per target
JOBS = 40
CLAIMERS = 8
TIMEOUT = 60.0

Doc = dict[str, Any]


def setup(admin: httpx.Client) -> Doc:
    """Two deployments in production: ``gated`` (no job agent: deployed through the gate, needing
    APPROVERS approvals) over GATE_TARGETS VMs, and ``pulled`` (a pull agent's) over JOBS clusters."""
    base = gate_world.build(admin, GATE_TARGETS, JOBS)
    tokens = {"gate": base.gate_token, "pull": base.pull_token}
    approvers = [ok(admin.post("/v1/tokens", json={"name": f"approver-{i}", "role": "approver"}), 201)["token"]
                 for i in range(APPROVERS)]
    gated, pulled, production = base.gated, base.pulled, base.production
    ok(admin.post("/v1/policies", json={
        "name": "gated-approvals", "selector": "deployment.slug == 'gated'",
        "rules": [{"anyApproval": {"minApprovals": APPROVERS}}]}), 201)
    version = ok(admin.post(f"/v1/deployments/{gated['id']}/versions", json={"tag": "1.0.0"}), 201)
    ok(admin.post(f"/v1/deployments/{pulled['id']}/versions", json={"tag": "1.0.0"}), 201)
    return {"tokens": tokens, "approvers": approvers, "production": production["id"], "version": version["id"],
            "gated": gated["id"], "pullers": base.pullers["id"], "gaters": base.gaters["id"], "vms": base.vms}


def together(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run every call in its own thread, all released at once by a barrier."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


class Clients:
    """One keep-alive client per (server, token), shared by the threads that use it (httpx is thread-safe)."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self.made: dict[tuple[int, str], httpx.Client] = {}

    def __call__(self, index: int, token: str) -> httpx.Client:
        key = (index % len(self.servers), token)
        if key not in self.made:
            self.made[key] = httpx.Client(base_url=self.servers[key[0]].base_url, timeout=TIMEOUT,
                                          headers={"Authorization": f"Bearer {token}"})
        return self.made[key]

    def close(self) -> None:
        for client in self.made.values():
            client.close()


def decision_of(admin: httpx.Client, target_id: str) -> Doc:
    decision: Doc = ok(admin.get(f"/v1/release-targets/{target_id}/decision"))
    return decision


def test_concurrent_approvals_gate_calls_and_claims_are_counted_exactly(pg_database: str, fleets: MakeFleet) -> None:
    fleet = fleets(pg_database, {"RELEASEGATE_LOOP_INTERVAL_SECONDS": "1"})
    apis = [fleet.api(f"api-{i}") for i in range(2)]
    fleet.controller("controller")
    admin = apis[0].client
    world = setup(admin)
    clients = Clients(apis)
    db = Database(pg_database)
    try:
        # -- approvals: every approver submits SUBMISSIONS times at once, through both servers ----------
        submissions = [(approver, n) for approver in world["approvers"] for n in range(SUBMISSIONS)]
        body = {"versionId": world["version"], "environmentId": world["production"], "status": "approved"}
        answers = together([
            lambda a=approver, n=n: clients(n, a).post("/v1/approvals", json={**body, "reason": f"#{n}"})
            for approver, n in submissions
        ])
        # A submission that lost the race for the one record replaces the winner's, as a later one does.
        assert {a.status_code for a in answers} == {201}, [(a.status_code, a.text) for a in answers]
        print(f"approvals: {dict(Counter(a.status_code for a in answers))} from {len(answers)} submissions")
        won = Counter(a.json()["user"] for a in answers)
        assert won == {f"approver-{i}": SUBMISSIONS for i in range(APPROVERS)}

        records = ok(admin.get("/v1/approvals", params={"versionId": world["version"], "limit": 1000}))["items"]
        assert sorted(r["user"] for r in records) == sorted(f"approver-{i}" for i in range(APPROVERS))
        assert db.scalar("SELECT count(*) FROM audit_log WHERE entity_type = 'approval' AND action = 'create'") \
            == APPROVERS
        gated_targets = ok(admin.get("/v1/release-targets", params={"deploymentId": world["gated"]}))["items"]
        assert len(gated_targets) == GATE_TARGETS
        verdict = next(v for v in decision_of(admin, gated_targets[0]["id"])["candidates"][0]["verdicts"]
                       if v["ruleType"] == "anyApproval")
        assert (verdict["status"], verdict["details"]["approved"]) == ("allowed", APPROVERS), verdict

        # -- gate calls and claims, all at once ------------------------------------------------------
        pulled_jobs = wait_for(f"the controller's {JOBS} pending jobs", lambda: pending_jobs(admin, world), TIMEOUT)
        gate_calls = [
            lambda i=i, k=k: clients(k, world["tokens"]["gate"]).post("/v1/gate", json={
                "deployment": "gated", "environment": "production", "resource": world["vms"][i], "version": "1.0.0"})
            for i in range(GATE_TARGETS) for k in range(GATE_CALLS)
        ]
        claims = [lambda job=job, c=c: clients(c, world["tokens"]["pull"]).post(f"/v1/jobs/{job}/claim")
                  for job in pulled_jobs for c in range(CLAIMERS)]
        # Calls about one target or one job are adjacent, so they race in the same wave; gate calls and
        # claims alternate, so both are in flight together.
        tagged = [call for pair in itertools.zip_longest(
            [("gate", c) for c in gate_calls], [("claim", c) for c in claims]) for call in pair if call is not None]
        answers = together_in_waves([call for _, call in tagged], wave=48)
        gate_answers = [a for (kind, _), a in zip(tagged, answers, strict=True) if kind == "gate"]
        claim_answers = [a for (kind, _), a in zip(tagged, answers, strict=True) if kind == "claim"]

        assert {a.status_code for a in gate_answers} == {200}, [a.text for a in gate_answers if a.status_code != 200]
        go = Counter(a.json()["job"]["releaseTargetId"] for a in gate_answers if a.json()["outcome"] == "go")
        assert go == {t["id"]: 1 for t in gated_targets}, "one go per target, no more, no fewer"
        for answer in gate_answers:
            if answer.json()["outcome"] != "go":
                assert answer.json()["outcome"] == "wait", answer.text
                assert any("JobActive" in reason for reason in answer.json()["reasons"]), answer.json()["reasons"]
        gate_jobs = db.rows("SELECT release_target_id, status, attempt FROM job WHERE job_agent_id = :a",
                            a=world["gaters"])
        assert sorted(gate_jobs) == sorted((t["id"], "inProgress", 1) for t in gated_targets)

        assert Counter(a.status_code for a in claim_answers) == {200: JOBS, 409: JOBS * (CLAIMERS - 1)}
        winners = Counter(a.json()["id"] for a in claim_answers if a.status_code == 200)
        assert winners == dict.fromkeys(pulled_jobs, 1), "each job claimed exactly once"
        claimed = Counter(row.entity_id for row in db.rows(
            "SELECT entity_id FROM audit_log WHERE entity_type = 'job' AND action = 'claim'"))
        assert claimed == dict.fromkeys(pulled_jobs, 1), "each job moved to inProgress exactly once"
        statuses = db.rows("SELECT status, count(*) FROM job WHERE job_agent_id = :a GROUP BY status",
                           a=world["pullers"])
        assert dict(statuses) == {"inProgress": JOBS}
    finally:
        clients.close()
        db.close()


def pending_jobs(admin: httpx.Client, world: Doc) -> list[str] | None:
    items = ok(admin.get(f"/v1/job-agents/{world['pullers']}/jobs", params={"status": "pending", "limit": 1000}))
    ids = [job["id"] for job in items["items"]]
    return ids if len(ids) == JOBS else None


def together_in_waves(calls: list[Callable[[], httpx.Response]], wave: int) -> list[httpx.Response]:
    """``together`` for at most ``wave`` calls at a time: thousands of threads on a two-core machine
    would measure the scheduler, not the product."""
    answers: list[httpx.Response] = []
    for start in range(0, len(calls), wave):
        answers += together(calls[start : start + wave])
    return answers
