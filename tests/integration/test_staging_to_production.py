"""Acceptance: one version goes from staging to production through every production gate (SPEC §3–§6).

Through the REST API alone, on each real backend. Production needs two approvals from people other
than the version's author, 30 minutes of soak after all of staging succeeded, the Mon–Thu
09:00–17:00 New York window, and a one-hour linear-normalized rollout over its three targets. The
explain endpoint is asked at chosen instants, present and future, and every answer is checked
against instants derived by hand below, never computed by the engine. Then the loop is driven to
those instants: jobs must appear exactly when the explanation said, not a second earlier, and the
answer given in advance for an instant must equal the one given at that instant.

The timeline crosses the US DST change of Sunday 2026-03-08 (02:00 local): 09:00 in New York is
14:00Z in the first week (EST, UTC−5) and 13:00Z in the second (EDT, UTC−4).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from controller.clock import FakeClock
from tests.conftest import T0

MINUTE = timedelta(minutes=1)
TICK = timedelta(seconds=1)  # "just before" an instant

# Week 1, EST (UTC−5). T0 = Monday 2026-03-02 14:00Z = 09:00 local: the week's first window opens,
# and it closes 480 minutes later, 17:00 local = 22:00Z.
MONDAY_CLOSE = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
# The loop creates the three staging jobs at T0 (no policy matches staging); the agent reports them
# successful one at a time. 100 % of 3 targets: k = ceil(3·100/100) = 3, so the third success counts.
STAGING_SUCCESS_AT = (T0 + 10 * MINUTE, T0 + 25 * MINUTE, T0 + 40 * MINUTE)
ASK_PARTIAL_STAGING = T0 + 30 * MINUTE  # 14:30Z: two of three succeeded
SOAK_END = datetime(2026, 3, 2, 15, 10, tzinfo=UTC)  # third success 14:40Z + 30 min soak
SELF_APPROVAL_AT = T0 + 60 * MINUTE  # 15:00Z: alice, the version's author; must not count
ASK_DURING_SOAK = T0 + 65 * MINUTE  # 15:05Z
BOB_APPROVAL_AT = T0 + 120 * MINUTE  # 16:00Z = 11:00 EST, inside the window: 1 of 2
ASK_ONE_APPROVAL = T0 + 150 * MINUTE  # 16:30Z: soaked, in the window, one approval short
# Thursday 2026-03-05 17:30 EST = 22:30Z, half an hour after Thursday's window closed at 22:00Z.
CAROL_APPROVAL_AT = datetime(2026, 3, 5, 22, 30, tzinfo=UTC)
FRIDAY_MORNING = datetime(2026, 3, 6, 15, 0, tzinfo=UTC)  # Friday 10:00 EST: no window on Fridays
# Week 2, EDT (UTC−4): Monday 2026-03-09 09:00 local = 13:00Z, not 14:00Z; it closes 17:00 = 21:00Z.
NEXT_OPEN = datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
NEXT_CLOSE = datetime(2026, 3, 9, 21, 0, tzinfo=UTC)
# Rollout start = latest satisfiedAt of the version-level gates = max(Carol's approval, Thursday
# 22:30Z; SOAK_END, Monday 15:10Z) = Thursday 22:30Z. That is outside the window, so it moves to
# the next opening.
ROLLOUT_START = NEXT_OPEN
# linear-normalized over N = 3 targets: offset(p) = floor(p·3600/3) seconds.
OFFSET_SECONDS = {0: 0, 1: 1200, 2: 2400}
ROLLOUT_AT = {p: ROLLOUT_START + timedelta(seconds=s) for p, s in OFFSET_SECONDS.items()}  # 13:00, 13:20, 13:40Z
P0_DONE_AT = NEXT_OPEN + 10 * MINUTE  # the agent finishes the first production deploy
DURING_ROLLOUT = NEXT_OPEN + 30 * MINUTE  # 13:30Z: one done, one running, one still to come
# Variant: both approvals land while staging soaks (bob 14:45Z, carol 14:50Z), inside Monday's window.
# Start = max(14:50Z, SOAK_END 15:10Z) = 15:10Z, inside the window, so it stays; + 0, 20, 40 minutes.
SOAK_APPROVALS_AT = {"bob": T0 + 45 * MINUTE, "carol": T0 + 50 * MINUTE}
ASK_SOAK_ONLY = T0 + 55 * MINUTE
SOAK_ROLLOUT_AT = {SOAK_END, SOAK_END + 20 * MINUTE, SOAK_END + 40 * MINUTE}  # 15:10, 15:30, 15:50Z

POLICY = {
    "name": "prod-gates",
    "selector": "environment.name == 'production'",
    "rules": [
        {"anyApproval": {"minApprovals": 2}},
        {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.name == 'staging'",
                                    "minimumSoakTimeMinutes": 30}},
        {"deploymentWindow": {"rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH;BYHOUR=9", "durationMinutes": 480,
                              "timezone": "America/New_York"}},
        {"gradualRollout": {"rolloutType": "linear-normalized", "timeScaleInterval": 3600}, "enforcement": "block"},
    ],
}


@dataclass
class World:
    client: TestClient
    clock: FakeClock
    version_id: str
    production_id: str
    agent_id: str
    agent: dict[str, str]  # the pull agent's auth headers
    approvers: dict[str, dict[str, str]]  # user -> auth headers
    staging_targets: set[str]
    production_targets: set[str]


def post(client: TestClient, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def explain(w: World, target_id: str, at: datetime | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The decision document, and the single candidate's verdicts by ruleType."""
    params = {} if at is None else {"at": at.isoformat()}
    response = w.client.get(f"/v1/release-targets/{target_id}/decision", params=params)
    assert response.status_code == 200, response.text
    doc = response.json()
    (candidate,) = doc["candidates"]
    assert candidate["version"]["id"] == w.version_id
    return doc, {v["ruleType"]: v for v in candidate["verdicts"]}


def check(verdict: dict[str, Any], status: str, reason: str, *, next_check_at: datetime | None = None,
          satisfied_at: datetime | None = None) -> None:
    got = (verdict["status"], verdict["reason"], instant(verdict["nextCheckAt"]), instant(verdict["satisfiedAt"]))
    assert got == (status, reason, next_check_at, satisfied_at), verdict


def check_wait(doc: dict[str, Any], *, eligible_at: datetime | None, waiting_for: set[str]) -> None:
    assert (doc["outcome"], instant(doc["eligibleAt"])) == ("wait", eligible_at), doc
    assert {entry.split(":")[0] for entry in doc["waitingFor"]} == waiting_for, doc["waitingFor"]


def jobs(w: World) -> dict[str, dict[str, Any]]:
    """Every job of the agent, by release target (one version, never retried: at most one each)."""
    response = w.client.get(f"/v1/job-agents/{w.agent_id}/jobs", headers=w.agent)
    assert response.status_code == 200, response.text
    found = {job["releaseTargetId"]: job for job in response.json()["items"]}
    assert len(found) == len(response.json()["items"]), "two jobs on one target"
    return found


def production_jobs(w: World) -> dict[str, dict[str, Any]]:
    return {t: job for t, job in jobs(w).items() if t in w.production_targets}


def run_loop(w: World, at: datetime) -> Any:
    w.clock.set(at)
    return w.client.app.state.loop.run_once()  # type: ignore[attr-defined]


def agent_completes(w: World, job_id: str, at: datetime) -> None:
    w.clock.set(at)
    claimed = post(w.client, f"/v1/jobs/{job_id}/claim", {}, w.agent)
    assert claimed["status"] == "inProgress"
    response = w.client.patch(f"/v1/jobs/{job_id}", json={"status": "successful"}, headers=w.agent)
    assert response.status_code == 200, response.text
    assert instant(response.json()["completedAt"]) == at


def approve(w: World, user: str, at: datetime) -> None:
    w.clock.set(at)
    body = {"versionId": w.version_id, "environmentId": w.production_id, "status": "approved", "reason": "lgtm"}
    assert post(w.client, "/v1/approvals", body, w.approvers[user])["user"] == user


def build(client: TestClient, clock: FakeClock) -> World:
    system = post(client, "/v1/systems", {"name": "shop"})
    environments = {}
    for name in ("staging", "production"):
        for i in range(3):
            post(client, "/v1/resources", {"identifier": f"{name}-{i}", "name": f"{name}-{i}", "kind": "k8s",
                                           "metadata": {"env": name}})
        environments[name] = post(client, "/v1/environments", {
            "systemId": system["id"], "name": name, "resourceSelector": f"resource.metadata.env == '{name}'"})["id"]
    agent_id = post(client, "/v1/job-agents", {"name": "argo", "type": "pull"})["id"]
    deployment = post(client, "/v1/deployments",
                      {"systemId": system["id"], "name": "Web", "slug": "web", "jobAgentId": agent_id})
    post(client, "/v1/policies", POLICY)

    def token(name: str, role: str, **extra: str) -> dict[str, str]:
        secret = post(client, "/v1/tokens", {"name": name, "role": role, **extra})["token"]
        return {"Authorization": f"Bearer {secret}"}

    approvers = {user: token(user, "approver") for user in ("alice", "bob", "carol")}
    agent = token("argo-agent", "agent", jobAgentId=agent_id)
    # Alice cut the release: her own approval must not count.
    version = post(client, f"/v1/deployments/{deployment['id']}/versions", {"tag": "v1.4.0", "createdBy": "alice"})
    assert (version["createdBy"], instant(version["createdAt"])) == ("alice", T0)

    def targets(environment_id: str) -> set[str]:
        page = client.get("/v1/release-targets", params={"deploymentId": deployment["id"],
                                                         "environmentId": environment_id}).json()
        return {t["id"] for t in page["items"]}

    w = World(client, clock, version["id"], environments["production"], agent_id, agent, approvers,
              targets(environments["staging"]), targets(environments["production"]))
    assert len(w.staging_targets) == len(w.production_targets) == 3
    return w


def test_staging_to_production(client: TestClient, clock: FakeClock) -> None:
    w = build(client, clock)
    deploy_staging(w)
    gather_approvals(w)
    positions, predicted = second_approval_outside_the_window(w)
    roll_out(w, positions, predicted)


def deploy_staging(w: World) -> None:
    run_loop(w, T0)
    staging_jobs = jobs(w)
    assert set(staging_jobs) == w.staging_targets  # production is held back
    assert {instant(j["createdAt"]) for j in staging_jobs.values()} == {T0}

    for target_id in w.production_targets:  # nothing has succeeded upstream yet
        doc, v = explain(w, target_id)
        check(v["anyApproval"], "pending", "AwaitingApproval")
        assert v["anyApproval"]["details"] == {"approved": 0, "required": 2}
        check(v["environmentProgression"], "pending", "AwaitingUpstreamSuccess")
        check(v["deploymentWindow"], "allowed", "InsideDeploymentWindow", next_check_at=MONDAY_CLOSE, satisfied_at=T0)
        check(v["gradualRollout"], "pending", "AwaitingGates")
        check_wait(doc, eligible_at=None, waiting_for={"anyApproval", "environmentProgression", "gradualRollout"})

    job_ids = [staging_jobs[t]["id"] for t in sorted(w.staging_targets)]
    for job_id, at in zip(job_ids[:2], STAGING_SUCCESS_AT[:2], strict=True):
        agent_completes(w, job_id, at)
        assert run_loop(w, at).jobs_created == 0
    doc, v = explain(w, min(w.production_targets), ASK_PARTIAL_STAGING)
    check(v["environmentProgression"], "pending", "AwaitingUpstreamSuccess")
    (staging,) = v["environmentProgression"]["details"]["environments"]
    assert (staging["succeeded"], staging["required"], staging["total"]) == (2, 3, 3)
    check_wait(doc, eligible_at=None, waiting_for={"anyApproval", "environmentProgression", "gradualRollout"})

    agent_completes(w, job_ids[2], STAGING_SUCCESS_AT[2])
    assert run_loop(w, STAGING_SUCCESS_AT[2]).jobs_created == 0


def gather_approvals(w: World) -> None:
    approve(w, "alice", SELF_APPROVAL_AT)
    assert run_loop(w, SELF_APPROVAL_AT).jobs_created == 0
    for target_id in w.production_targets:  # soaking; the author's approval counts for nothing
        doc, v = explain(w, target_id, ASK_DURING_SOAK)
        check(v["anyApproval"], "pending", "AwaitingApproval")
        assert v["anyApproval"]["details"] == {"approved": 0, "required": 2}
        check(v["environmentProgression"], "pending", "SoakTime", next_check_at=SOAK_END)
        check(v["deploymentWindow"], "allowed", "InsideDeploymentWindow", next_check_at=MONDAY_CLOSE, satisfied_at=T0)
        check(v["gradualRollout"], "pending", "AwaitingGates")
        check_wait(doc, eligible_at=None, waiting_for={"anyApproval", "gradualRollout"})

    approve(w, "bob", BOB_APPROVAL_AT)
    assert run_loop(w, BOB_APPROVAL_AT).jobs_created == 0
    for target_id in w.production_targets:  # soaked, in the window, one approval short: no ETA
        doc, v = explain(w, target_id, ASK_ONE_APPROVAL)
        check(v["anyApproval"], "pending", "AwaitingApproval")
        assert v["anyApproval"]["details"] == {"approved": 1, "required": 2}
        check(v["environmentProgression"], "allowed", "ProgressionSatisfied", satisfied_at=SOAK_END)
        check(v["deploymentWindow"], "allowed", "InsideDeploymentWindow", next_check_at=MONDAY_CLOSE, satisfied_at=T0)
        check(v["gradualRollout"], "pending", "AwaitingGates")
        check_wait(doc, eligible_at=None, waiting_for={"anyApproval", "gradualRollout"})


def check_version_gates(v: dict[str, dict[str, Any]]) -> None:
    check(v["anyApproval"], "allowed", "Approved", satisfied_at=CAROL_APPROVAL_AT)
    assert v["anyApproval"]["details"] == {"approved": 2, "required": 2}  # bob and carol, not alice
    check(v["environmentProgression"], "allowed", "ProgressionSatisfied", satisfied_at=SOAK_END)


def second_approval_outside_the_window(
    w: World,
) -> tuple[dict[str, int], dict[tuple[str, datetime], dict[str, Any]]]:
    approve(w, "carol", CAROL_APPROVAL_AT)
    result = run_loop(w, CAROL_APPROVAL_AT)
    assert result.jobs_created == 0
    assert result.next_wake_at == NEXT_OPEN  # the controller sleeps until the DST-shifted opening

    positions: dict[str, int] = {}
    for target_id in w.production_targets:  # Thursday 17:30 and Friday 10:00 New York: closed
        for at in (CAROL_APPROVAL_AT, FRIDAY_MORNING):
            doc, v = explain(w, target_id, at)
            check_version_gates(v)
            check(v["deploymentWindow"], "pending", "OutsideDeploymentWindow", next_check_at=NEXT_OPEN)
            assert v["deploymentWindow"]["details"]["nextWindowStart"] == "2026-03-09T13:00:00Z"
            rollout = v["gradualRollout"]
            position = positions.setdefault(target_id, rollout["details"]["position"])
            check(rollout, "pending", "RolloutPosition", next_check_at=ROLLOUT_AT[position])
            assert rollout["details"]["position"] == position  # stable between evaluations
            assert (rollout["details"]["total"], rollout["details"]["offsetSeconds"]) == (3, OFFSET_SECONDS[position])
            check_wait(doc, eligible_at=ROLLOUT_AT[position], waiting_for=set())
    assert sorted(positions.values()) == [0, 1, 2]
    assert {OFFSET_SECONDS[p] for p in positions.values()} == {0, 1200, 2400}

    # Ask now what each target will be told at every instant of the rollout, and just before.
    instants = [FRIDAY_MORNING, *(at - d for at in ROLLOUT_AT.values() for d in (TICK, timedelta(0)))]
    predicted = {(t, at): explain(w, t, at)[0] for t in w.production_targets for at in instants}
    for target_id, position in positions.items():  # at the opening only the first target may go
        doc, v = explain(w, target_id, NEXT_OPEN)
        assert doc == predicted[(target_id, NEXT_OPEN)]
        check_version_gates(v)
        check(v["deploymentWindow"], "allowed", "InsideDeploymentWindow", next_check_at=NEXT_CLOSE,
              satisfied_at=NEXT_OPEN)
        assert v["deploymentWindow"]["details"]["windowStart"] == "2026-03-09T13:00:00Z"
        if position == 0:
            check(v["gradualRollout"], "allowed", "RolloutReached", satisfied_at=NEXT_OPEN)
            assert (doc["outcome"], instant(doc["eligibleAt"])) == ("go", NEXT_OPEN)
        else:
            check(v["gradualRollout"], "pending", "RolloutPosition", next_check_at=ROLLOUT_AT[position])
            check_wait(doc, eligible_at=ROLLOUT_AT[position], waiting_for=set())
    return positions, predicted


def step(w: World, at: datetime, predicted: dict[tuple[str, datetime], dict[str, Any]],
         deployed: set[str]) -> Any:
    """At ``at``, the undeployed targets are told what was predicted; then one pass runs and
    exactly ``deployed`` hold a production job."""
    w.clock.set(at)
    for target_id in w.production_targets - set(production_jobs(w)):
        doc, _ = explain(w, target_id)
        assert doc == predicted[(target_id, at)], target_id
    result = run_loop(w, at)
    assert set(production_jobs(w)) == deployed
    return result


def roll_out(w: World, positions: dict[str, int],
             predicted: dict[tuple[str, datetime], dict[str, Any]]) -> None:
    by_position = {p: t for t, p in positions.items()}
    first, second, third = (by_position[p] for p in range(3))
    assert step(w, FRIDAY_MORNING, predicted, set()).next_wake_at == NEXT_OPEN

    assert step(w, ROLLOUT_AT[0] - TICK, predicted, set()).next_wake_at == ROLLOUT_AT[0]
    step(w, ROLLOUT_AT[0], predicted, {first})
    agent_completes(w, production_jobs(w)[first]["id"], P0_DONE_AT)
    assert step(w, ROLLOUT_AT[1] - TICK, predicted, {first}).next_wake_at == ROLLOUT_AT[1]
    step(w, ROLLOUT_AT[1], predicted, {first, second})

    w.clock.set(DURING_ROLLOUT)
    doc, v = explain(w, first)
    assert (doc["outcome"], doc["reason"], doc["currentVersion"]["id"]) == ("no-go", "UpToDate", w.version_id)
    check(v["gradualRollout"], "allowed", "AlreadyDeployed")
    doc, v = explain(w, second)
    assert (doc["outcome"], doc["reason"], doc["eligibleAt"]) == ("wait", "JobActive", None)
    check(v["gradualRollout"], "allowed", "RolloutReached", satisfied_at=ROLLOUT_AT[1])
    doc, v = explain(w, third)
    check(v["gradualRollout"], "pending", "RolloutPosition", next_check_at=ROLLOUT_AT[2])
    check_wait(doc, eligible_at=ROLLOUT_AT[2], waiting_for=set())
    for target_id in (first, second, third):
        check(explain(w, target_id)[1]["deploymentWindow"], "allowed", "InsideDeploymentWindow",
              next_check_at=NEXT_CLOSE, satisfied_at=NEXT_OPEN)

    assert step(w, ROLLOUT_AT[2] - TICK, predicted, {first, second}).next_wake_at == ROLLOUT_AT[2]
    step(w, ROLLOUT_AT[2], predicted, {first, second, third})
    created = {t: instant(job["createdAt"]) for t, job in production_jobs(w).items()}
    assert created == {by_position[p]: ROLLOUT_AT[p] for p in range(3)}


def test_only_the_soak_left_gives_an_eta_and_waits_for_nothing_else(client: TestClient, clock: FakeClock) -> None:
    """Approved during the soak, inside the window: every remaining blocker is time, so each target
    has an ETA (soak end + its offset) and ``waitingFor`` is empty although the rollout, awaiting
    its gates, has no ``nextCheckAt`` of its own."""
    w = build(client, clock)
    run_loop(w, T0)
    for job_id, at in zip((j["id"] for j in jobs(w).values()), STAGING_SUCCESS_AT, strict=True):
        agent_completes(w, job_id, at)
    for user, at in SOAK_APPROVALS_AT.items():
        approve(w, user, at)
    eta: dict[str, datetime] = {}
    for target_id in w.production_targets:
        doc, v = explain(w, target_id, ASK_SOAK_ONLY)
        check(v["anyApproval"], "allowed", "Approved", satisfied_at=SOAK_APPROVALS_AT["carol"])
        check(v["environmentProgression"], "pending", "SoakTime", next_check_at=SOAK_END)
        check(v["deploymentWindow"], "allowed", "InsideDeploymentWindow", next_check_at=MONDAY_CLOSE, satisfied_at=T0)
        check(v["gradualRollout"], "pending", "AwaitingGates")
        due = instant(doc["eligibleAt"])
        assert due is not None, doc
        check_wait(doc, eligible_at=due, waiting_for=set())
        eta[target_id] = due
    assert set(eta.values()) == SOAK_ROLLOUT_AT

    instants = sorted({at - d for at in SOAK_ROLLOUT_AT for d in (TICK, timedelta(0))})
    predicted = {(t, at): explain(w, t, at)[0] for t in w.production_targets for at in instants}
    for at in instants:
        step(w, at, predicted, {t for t, due in eta.items() if due <= at})
    assert {t: instant(job["createdAt"]) for t, job in production_jobs(w).items()} == eta
