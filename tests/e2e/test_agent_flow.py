"""Acceptance: a version flows staging → production through the real server and a real pull agent.

Why it exists: every piece (loop, gates, jobs, claims, heartbeats, leases, retries) is tested
alone elsewhere; this proves they compose over HTTP, in real time, with the shipped ``releasegate
serve`` and ``releasegate agent`` processes. The agent's command appends one line per deploy with
its own clock reading, so "nothing deploys before its gates allow" is checked against what the
agent actually did, not only against what the server says.

Timing is compared on one machine, so the agent's ``date`` and the server's timestamps share a
clock. Lower bounds are exact (a gate may never open early); upper bounds are liveness checks with
slack for a loaded machine.

What real rules cannot express: ``minimumSoakTimeMinutes`` is a whole number of minutes, so the
smallest real soak is 60 s, too long for this suite. The progression here has no soak; the
"after staging" order is proven by the progression gate, and the timed spacing by ``gradualRollout``
(linear, 2 s per position).
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import RELEASEGATE, ManagedProcess, ServerProcess, StartServer, ok, server_env, wait_for

ROLLOUT_STEP = timedelta(seconds=2)
SLACK = timedelta(seconds=6)  # liveness only: loop tick (1 s) + a pass + an agent poll, on a busy machine
TIMEOUT = 45.0
Doc = dict[str, Any]


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def all_items(client: httpx.Client, path: str, **params: Any) -> list[Doc]:
    items: list[Doc] = []
    cursor = None
    while True:
        page = ok(client.get(path, params={**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}))
        items += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            return items


class Agent(ManagedProcess):
    """``releasegate agent`` polling every 0.2 s, logging each deploy to ``deploys`` with a timestamp."""

    def __init__(self, server: ServerProcess, token: str, tmp_path: Path, name: str, *,
                 extra: str = "", heartbeat: float = 1.0) -> None:
        self.deploys = tmp_path / "deploys.log"
        command = (f'echo "{name} $RELEASEGATE_ENVIRONMENT_NAME $RELEASEGATE_RESOURCE_IDENTIFIER '
                   f'$RELEASEGATE_VERSION_TAG $RELEASEGATE_JOB_ATTEMPT $(date +%s.%N)" >> {self.deploys}{extra}')
        argv = [str(RELEASEGATE), "agent", "--url", server.base_url, "--token", token, "--job-agent", "deployer",
                "--command", command, "--poll-seconds", "0.2", "--heartbeat-seconds", str(heartbeat)]
        env = server_env(tmp_path, server.port, None)
        super().__init__(argv, env=env, cwd=tmp_path, log_path=tmp_path / f"agent-{name}.log")


def deploys(path: Path) -> list[tuple[str, str, str, str, int, datetime]]:
    """(agent, environment, resource, version, attempt, when) per line the agents' command wrote."""
    lines = path.read_text().splitlines() if path.exists() else []
    rows = []
    for line in lines:
        agent, env, resource, tag, attempt, stamp = line.split()
        rows.append((agent, env, resource, tag, int(attempt), datetime.fromtimestamp(float(stamp), UTC)))
    return rows


def setup(server: ServerProcess, environments: dict[str, str], resources: dict[str, str]) -> Doc:
    """A job agent ``deployer`` with an agent token, one system, the environments (name → tier) and
    a deployment ``api`` over all of them; resources (identifier → tier)."""
    admin = server.client
    agent = ok(admin.post("/v1/job-agents", json={"name": "deployer"}), 201)
    token = ok(admin.post("/v1/tokens", json={"name": "deployer", "role": "agent", "jobAgentId": agent["id"]}), 201)
    system = ok(admin.post("/v1/systems", json={"name": "shop"}), 201)
    envs = {
        name: ok(admin.post("/v1/environments", json={
            "systemId": system["id"], "name": name, "resourceSelector": f"resource.metadata.tier == '{tier}'"}), 201)
        for name, tier in environments.items()
    }
    deployment = ok(admin.post("/v1/deployments", json={
        "systemId": system["id"], "name": "API", "slug": "api", "jobAgentId": agent["id"]}), 201)
    ok(admin.put("/v1/resources", json=[
        {"identifier": identifier, "name": identifier, "kind": "k8s", "metadata": {"tier": tier}}
        for identifier, tier in resources.items()]))
    targets = {t["resourceId"]: t for t in all_items(admin, "/v1/release-targets", deploymentId=deployment["id"])}
    by_identifier = {r["identifier"]: r["id"] for r in all_items(admin, "/v1/resources")}
    return {
        "agent": agent, "token": token["token"], "envs": envs, "deployment": deployment,
        "targets": {identifier: targets[rid] for identifier, rid in by_identifier.items()},
    }


def jobs_of(server: ServerProcess, world: Doc) -> list[Doc]:
    return all_items(server.client, f"/v1/job-agents/{world['agent']['id']}/jobs")


def decisions_of(server: ServerProcess, target_id: str) -> list[Doc]:
    return all_items(server.client, "/v1/decisions", releaseTargetId=target_id)


def blockers(entry: Doc) -> set[str]:
    """The (ruleType, reason) of every blocking, not-allowed verdict of the entry's first candidate."""
    candidates = entry["document"]["candidates"][:1]
    return {
        f"{v['ruleType']}:{v['reason']}"
        for c in candidates for v in c["verdicts"]
        if v["status"] != "allowed" and v["enforcement"] == "block"
    }


def rollout_of(entry: Doc) -> Doc:
    candidates = entry["document"]["candidates"][:1]
    verdicts = [v for c in candidates for v in c["verdicts"] if v["ruleType"] == "gradualRollout"]
    assert len(verdicts) == 1, entry
    return verdicts[0]


STAGING = ("stg-1", "stg-2", "stg-3")
PRODUCTION = ("prd-1", "prd-2", "prd-3")


def test_a_version_flows_through_staging_then_production_with_approval_and_rollout(
    start: StartServer, tmp_path: Path
) -> None:
    server = start(env={"RELEASEGATE_LOOP_INTERVAL_SECONDS": "1"})
    world = setup(server, {"staging": "staging", "production": "prod"},
                  {**dict.fromkeys(STAGING, "staging"), **dict.fromkeys(PRODUCTION, "prod")})
    admin = server.client
    ok(admin.post("/v1/policies", json={
        "name": "production-gates",
        "selector": "environment.name == 'production'",
        "rules": [
            {"anyApproval": {"minApprovals": 1}},
            {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.name == 'staging'"}},
            {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": int(ROLLOUT_STEP.total_seconds())}},
        ],
    }), 201)
    approver = server.new_client(ok(admin.post("/v1/tokens", json={"name": "alice", "role": "approver"}), 201)["token"])
    targets = {identifier: world["targets"][identifier]["id"] for identifier in STAGING + PRODUCTION}
    environment_of = {targets[i]: ("staging" if i in STAGING else "production") for i in targets}

    with Agent(server, world["token"], tmp_path, "a") as agent:
        version = ok(admin.post(f"/v1/deployments/{world['deployment']['id']}/versions", json={"tag": "1.0.0"}), 201)

        # Staging deploys at once; production must not, whatever the loop does meanwhile.
        def staging_done() -> list[Doc] | None:
            jobs = [j for j in jobs_of(server, world) if environment_of[j["releaseTargetId"]] == "staging"]
            return jobs if len(jobs) == 3 and all(j["status"] == "successful" for j in jobs) else None

        staging_jobs = wait_for("staging to succeed", staging_done)
        staging_completed = max(at(j["completedAt"]) for j in staging_jobs)

        # The loop has looked at production again since staging finished: only the approval blocks.
        def approval_only() -> bool:
            for identifier in PRODUCTION:
                last = decisions_of(server, targets[identifier])[-1]
                waiting_on = blockers(last)
                if at(last["evaluatedAt"]) < staging_completed or waiting_on != {
                        "anyApproval:AwaitingApproval", "gradualRollout:AwaitingGates"}:
                    return False
            return True

        wait_for("production to wait only on the approval", approval_only)
        assert [j for j in jobs_of(server, world) if environment_of[j["releaseTargetId"]] == "production"] == []
        pending = ok(approver.get("/v1/approvals", params={"pending": "true"}))["items"]
        assert [(p["versionId"], p["environmentName"]) for p in pending] == [(version["id"], "production")]

        approval = ok(approver.post("/v1/approvals", json={
            "versionId": version["id"], "environmentId": world["envs"]["production"]["id"], "status": "approved",
            "reason": "staging is green"}), 201)
        approved_at = at(approval["createdAt"])

        def everything_done() -> list[Doc] | None:
            jobs = jobs_of(server, world)
            return jobs if len(jobs) == 6 and all(j["status"] == "successful" for j in jobs) else None

        jobs = wait_for("production to succeed", everything_done)
    assert agent.returncode == 0 and not agent.killed, agent.log()

    # Every job was created, claimed and completed, once per target, by the agent.
    by_target = {j["releaseTargetId"]: j for j in jobs}
    assert set(by_target) == set(targets.values())
    for job in jobs:
        assert (job["versionId"], job["attempt"], job["status"]) == (version["id"], 1, "successful")
        assert at(job["createdAt"]) <= at(job["startedAt"]) <= at(job["completedAt"])
    lines = deploys(agent.deploys)
    assert sorted((env, res, tag) for _, env, res, tag, _, _ in lines) == sorted(
        ("staging" if i in STAGING else "production", i, "1.0.0") for i in targets)
    ran_at = {res: when for _, _, res, _, _, when in lines}
    for identifier, target_id in targets.items():
        job = by_target[target_id]
        # The command ran between the claim and the report.
        assert at(job["startedAt"]) <= ran_at[identifier] <= at(job["completedAt"]), identifier

    # Staging went first and had no gate: created right after the version.
    created_at = at(version["createdAt"])
    for identifier in STAGING:
        job = by_target[targets[identifier]]
        assert created_at <= at(job["createdAt"]) <= created_at + SLACK

    # Production: after every staging success (progression) and after the approval, then one
    # target every ROLLOUT_STEP from the approval (the last gate satisfied, so the rollout's start).
    assert approved_at > staging_completed
    positions = {}
    for identifier in PRODUCTION:
        target_id = targets[identifier]
        job = by_target[target_id]
        log = decisions_of(server, target_id)
        go = [entry for entry in log if entry["outcome"] == "go"]
        assert len(go) == 1, [(e["outcome"], e["reason"]) for e in log]
        rollout = rollout_of(go[0])
        position = rollout["details"]["position"]
        rollout_at = at(rollout["details"]["rolloutAt"])
        positions[identifier] = position
        assert rollout_at == approved_at + position * ROLLOUT_STEP
        # Never early: not the job, not the agent's command.
        assert at(job["createdAt"]) >= max(rollout_at, staging_completed, approved_at), identifier
        assert ran_at[identifier] >= rollout_at, identifier
        # Live: soon after the gate opened; and the job was made by the pass that decided `go`.
        assert at(job["createdAt"]) <= rollout_at + SLACK, identifier
        assert at(go[0]["evaluatedAt"]) == at(job["createdAt"])
        assert_production_log_order(log, staging_completed, approved_at, position)
    assert sorted(positions.values()) == [0, 1, 2]
    # The agent deployed production in rollout order.
    order = [res for _, env, res, _, _, _ in sorted(lines, key=lambda r: r[5]) if env == "production"]
    assert order == sorted(PRODUCTION, key=positions.__getitem__)


def assert_production_log_order(log: list[Doc], staging_completed: datetime, approved_at: datetime,
                                position: int) -> None:
    """No candidate before the version existed; then waiting on staging and the approval, then on
    the approval alone, then (for a later position) on the rollout, then go: in this order, each
    transition at the right time."""
    phases = []
    for entry in log:
        reasons = blockers(entry)
        if (entry["outcome"], entry["reason"]) == ("no-go", "NoCandidates") and "go" not in [p for p, _ in phases]:
            phase = "before"
        elif entry["outcome"] == "go":
            phase = "go"
        elif any(r.startswith("environmentProgression:") for r in reasons):
            phase = "staging"
        elif "anyApproval:AwaitingApproval" in reasons:
            phase = "approval"
        elif reasons == {"gradualRollout:RolloutPosition"}:
            phase = "rollout"
        else:
            phase = "after"  # after the go: the job is active, then the target is up to date
        phases.append((phase, at(entry["evaluatedAt"])))
    names = [name for name, _ in phases]
    expected = ["before", "staging", "approval", *(["rollout"] if position else []), "go"]
    seen = [name for i, name in enumerate(names) if name != "after" and (i == 0 or names[i - 1] != name)]
    if seen[0] != "before":  # the loop may first have looked at the target after the version existed
        seen.insert(0, "before")
    assert seen == expected, phases
    assert names.index("go") < len(names) and all(n == "after" for n in names[names.index("go") + 1:]), phases
    for name, when in phases:
        if name == "approval":
            assert when >= staging_completed and when < approved_at + SLACK
        if name in ("rollout", "go"):
            assert when >= approved_at


def test_an_agent_that_stops_heartbeating_loses_its_job_and_another_agent_retries_it(
    start: StartServer, tmp_path: Path
) -> None:
    lease = timedelta(seconds=2)
    backoff = timedelta(seconds=1)
    server = start(env={"RELEASEGATE_LOOP_INTERVAL_SECONDS": "1", "RELEASEGATE_JOB_LEASE_SECONDS": "2"})
    world = setup(server, {"production": "prod"}, {"prd-1": "prod"})
    admin = server.client
    ok(admin.post("/v1/policies", json={
        "name": "retry-lost", "selector": "true",
        "rules": [{"retry": {"maxRetries": 1, "backoffSeconds": int(backoff.total_seconds())}}],
    }), 201)
    target_id = world["targets"]["prd-1"]["id"]

    # Agent A heartbeats every 0.3 s while its deploy takes 4 s; it is frozen (SIGSTOP) right after
    # it claimed the job, so it stops heartbeating without any chance to report.
    with Agent(server, world["token"], tmp_path, "a", extra="; sleep 4", heartbeat=0.3) as frozen:
        ok(admin.post(f"/v1/deployments/{world['deployment']['id']}/versions", json={"tag": "2.0.0"}), 201)
        first = wait_for("agent A to claim the job", lambda: next(
            (j for j in jobs_of(server, world) if j["status"] == "inProgress"), None))
        wait_for("agent A's deploy to start", lambda: deploys(frozen.deploys))
        os.kill(frozen.pid, signal.SIGSTOP)
        stopped_at = datetime.now(UTC)
        try:
            with Agent(server, world["token"], tmp_path, "b") as rescuer:
                def retried() -> list[Doc] | None:
                    jobs = sorted(jobs_of(server, world), key=lambda j: j["attempt"])
                    return jobs if len(jobs) == 2 and jobs[1]["status"] == "successful" else None

                lost, second = wait_for("the retry to succeed", retried)
                final = ok(admin.get(f"/v1/jobs/{first['id']}"))
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        # Thawed, agent A finishes its command and reports on a job that is no longer its own:
        # the report is refused (409), the job stays lost, and the agent goes back to polling.
        wait_for("agent A to report and poll again", lambda: polled_after_refused_report(frozen.log())
                 or frozen.returncode is not None)
        assert frozen.returncode is None, frozen.log()
    assert frozen.returncode == rescuer.returncode == 0, (frozen.log(), rescuer.log())

    assert lost["id"] == first["id"] and lost["attempt"] == 1
    assert final["status"] == lost["status"] == "lost", final
    assert "lease expired" in final["message"]
    # The lease the last heartbeat set (heartbeats only extend it, and none came after the freeze,
    # bar one already in flight); the job was lost only once it had lapsed, and soon after.
    lease_end = at(final["leaseExpiresAt"])
    assert at(first["startedAt"]) + lease <= lease_end <= stopped_at + lease + timedelta(seconds=1)
    assert lease_end < at(lost["completedAt"]) <= lease_end + SLACK
    assert ok(admin.get(f"/v1/jobs/{first['id']}"))["status"] == "lost", "a late report must not revive it"

    assert second["attempt"] == 2 and second["status"] == "successful"
    assert at(second["createdAt"]) >= at(lost["completedAt"]) + backoff, "the retry waited for its backoff"
    assert at(second["createdAt"]) <= at(lost["completedAt"]) + backoff + SLACK
    lines = deploys(frozen.deploys)
    assert [(name, attempt) for name, _, _, _, attempt, _ in lines] == [("a", 1), ("b", 2)]
    assert lines[1][5] >= at(second["createdAt"])

    # The decision log: the first go, then (once the job was lost) the retry's backoff, then the
    # second go no earlier than the backoff's end.
    log = [(e["outcome"], e["reason"], at(e["evaluatedAt"])) for e in decisions_of(server, target_id)]
    steps = [(outcome, reason) for outcome, reason, _ in log if outcome == "go" or reason == "RetryBackoff"]
    assert steps == [("go", "Eligible"), ("wait", "RetryBackoff"), ("go", "Eligible")], log
    backoff_seen = next(when for _, reason, when in log if reason == "RetryBackoff")
    second_go = [when for outcome, _, when in log if outcome == "go"][1]
    assert at(lost["completedAt"]) <= backoff_seen < second_go == at(second["createdAt"])


def polled_after_refused_report(agent_log: str) -> bool:
    """The agent's log shows its report refused with 409, and a poll for jobs after it."""
    lines = agent_log.splitlines()
    refused = [i for i, line in enumerate(lines) if "PATCH" in line and "409" in line]
    return bool(refused) and any("GET" in line and "status=pending" in line for line in lines[refused[0] + 1:])
