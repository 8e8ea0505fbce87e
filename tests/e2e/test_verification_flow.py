"""Acceptance: verification gates production and rolls back a bad staging deploy, end to end.

The real ``releasegate serve`` and ``releasegate agent`` processes, and a real health endpoint on
127.0.0.1 whose answers the test scripts. Staging verifies every deploy (two measurements a second
apart, ``onFailure: rollback``); production needs staging's success *with verification passed*.

- 1.0.0, healthy endpoint: staging deploys, verifies, and production proceeds.
- 2.0.0, failing endpoint: staging deploys, verification fails, a rollback job to 1.0.0 is queued
  and run by the agent; production never deploys 2.0.0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import StartServer, ok, wait_for
from tests.e2e.test_agent_flow import Agent, all_items, jobs_of, setup
from tests.probe_servers import Answer, ScriptedServer

Doc = dict[str, Any]


def test_a_failed_staging_verification_rolls_back_and_production_never_deploys(
    start: StartServer, tmp_path: Path, health: ScriptedServer
) -> None:
    server = start(env={"RELEASEGATE_LOOP_INTERVAL_SECONDS": "1"})
    world = setup(server, {"staging": "staging", "production": "prod"}, {"stg-1": "staging", "prd-1": "prod"})
    admin = server.client
    health.script("/health", Answer(body={"status": "ok"}))
    ok(admin.post("/v1/policies", json={
        "name": "verify-staging", "selector": "environment.name == 'staging'",
        "rules": [{"verification": {"onFailure": "rollback", "metrics": [{
            "name": "health", "intervalSeconds": 1, "count": 2, "successCondition": "result.json.status == 'ok'",
            "provider": {"type": "http", "url": health.url + "/health?host={{resource.identifier}}", "timeout": "2s"},
        }]}}],
    }), 201)
    ok(admin.post("/v1/policies", json={
        "name": "production-after-verified-staging", "selector": "environment.name == 'production'",
        "rules": [{"environmentProgression": {"dependsOnEnvironmentSelector": "environment.name == 'staging'",
                                              "requireVerificationPassed": True}}],
    }), 201)
    staging, production = world["targets"]["stg-1"]["id"], world["targets"]["prd-1"]["id"]
    versions = f"/v1/deployments/{world['deployment']['id']}/versions"

    def jobs(target: str) -> list[Doc]:
        return [j for j in jobs_of(server, world) if j["releaseTargetId"] == target]

    def runs(target: str) -> list[Doc]:
        return all_items(admin, "/v1/verifications", releaseTargetId=target)

    with Agent(server, world["token"], tmp_path, "a"):
        v1 = ok(admin.post(versions, json={"tag": "1.0.0"}), 201)
        wait_for("production to deploy 1.0.0 after staging verified it",
                 lambda: [j for j in jobs(production) if j["status"] == "successful"])
        (passed,) = runs(staging)
        assert passed["status"] == "passed"
        assert [m["status"] for m in ok(admin.get(f"/v1/verifications/{passed['id']}"))["measurements"]] == [
            "passed", "passed"]
        (production_job,) = jobs(production)
        assert production_job["versionId"] == v1["id"]
        # Production's job was created only after staging's verification passed.
        assert production_job["createdAt"] >= passed["completedAt"]
        hits_before = len(health.hits("/health"))
        assert hits_before == 2 and health.hits("/health")[0].query == {"host": ["stg-1"]}

        health.script("/health", Answer(503, {"status": "down"}))
        v2 = ok(admin.post(versions, json={"tag": "2.0.0"}), 201)
        failed = wait_for("2.0.0's verification on staging to fail",
                          lambda: [r for r in runs(staging) if r["versionId"] == v2["id"] and r["status"] == "failed"])
        assert failed[0]["rollbackVersionId"] == v1["id"]
        rollback = wait_for("the rollback to 1.0.0 to be deployed", lambda: [
            j for j in jobs(staging) if j["reason"] == "rollback" and j["status"] == "successful"])
        assert [j["versionId"] for j in rollback] == [v1["id"]]
        decision = ok(admin.get(f"/v1/release-targets/{staging}/decision"))
        assert decision["currentVersion"]["tag"] == "1.0.0"
        audit = all_items(admin, "/v1/audit")
        assert [(a["actor"], a["entityId"]) for a in audit if a["action"] == "rollback"] == [("verification", staging)]

        # The rollback is a deploy like any other, so it is verified too (and fails against the 503s; with
        # no earlier good version left, nothing more is rolled back). Once that run has ended the loop has
        # had its passes: production still never deployed 2.0.0, and staging never redeployed it.
        wait_for("the rollback's own verification to end", lambda: [
            r for r in runs(staging) if r["jobId"] == rollback[0]["id"] and r["status"] == "failed"])
        assert [j["versionId"] for j in jobs(production)] == [v1["id"]]
        assert [(j["versionId"], j["reason"]) for j in jobs(staging)] == [
            (v1["id"], "policy"), (v2["id"], "policy"), (v1["id"], "rollback")]
        explained = ok(admin.get(f"/v1/release-targets/{production}/decision", params={"version": "2.0.0"}))
        verdicts = explained["candidates"][0]["verdicts"]
        (progression,) = [v for v in verdicts if v["ruleType"] == "environmentProgression"]
        assert progression["status"] == "pending"
