"""The reconcile step (SPEC §5–§6): from a decision to the jobs that make the world match it.

Pure: every test builds a small ``Snapshot`` by hand and calls ``reconcile`` at a named instant.
One deployment ``api`` with a job agent, one production target; T0 is Monday 2026-03-02 14:00Z.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.cel import Doc
from controller.decision import Outcome
from controller.facts import ApprovalFact, ApprovalStatus, JobFact, JobStatus, TargetFact, VersionFact, VersionStatus
from controller.policy import Policy, compile_selector, parse_rules
from controller.reconcile import CreateJob, Reconciled, merged_config, reconcile
from controller.snapshot import RedeployRequest, Snapshot

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
SYSTEM, PROD, DEPLOYMENT, AGENT = "sys", "env-prod", "dep-api", "agent-1"
TARGET = "t-prod-1"

AGENT_CONFIG = {"image": {"registry": "registry.a", "pull": "always"}, "replicas": 1, "debug": True, "region": "a"}
DEPLOYMENT_CONFIG = {"image": {"registry": "registry.b"}, "replicas": 2, "debug": {"level": 1}}
VERSION_CONFIG = {"image": {"tag": "2.0.0"}, "replicas": 3, "region": ["b", "c"]}
MERGED = {
    "image": {"registry": "registry.b", "pull": "always", "tag": "2.0.0"},
    "replicas": 3,
    "debug": {"level": 1},
    "region": ["b", "c"],
}

ONE_APPROVAL = {"anyApproval": {"minApprovals": 1}}
RECALL_3 = {"versionSelector": {"selector": "version.tag != '3.0.0'", "description": "3.0.0 is recalled"}}
DENY_ALL = {"versionSelector": {"selector": "false", "description": "frozen"}}
# Deny deploys 14:00-15:00 UTC daily: T0 is inside; from T0 + 1h it lets everything through.
DENY_14Z = {"deploymentWindow": {"rrule": "FREQ=DAILY;BYHOUR=14", "durationMinutes": 60, "allowWindow": False}}
RETRY_5 = {"retry": {"maxRetries": 5}}
APPROVED = [ApprovalFact("alice", ApprovalStatus.APPROVED, T0 - MIN)]
VETO = [ApprovalFact("bob", ApprovalStatus.REJECTED, T0 - MIN)]


def version(tag: str, created_at: datetime, config: Mapping[str, Any] | None = None) -> VersionFact:
    doc = {"id": f"ver-{tag}", "deploymentId": DEPLOYMENT, "tag": tag, "name": tag, "status": "ready",
           "config": dict(config or {}), "metadata": {}, "createdBy": "ci", "createdAt": created_at}
    return VersionFact(f"ver-{tag}", DEPLOYMENT, tag, VersionStatus.READY, created_at, "ci", doc)


V1 = version("1.0.0", T0 - 72 * HOUR)
V2 = version("2.0.0", T0 - 48 * HOUR, VERSION_CONFIG)
V3 = version("3.0.0", T0 - 24 * HOUR)


def job(ver: VersionFact, status: JobStatus, created_at: datetime, *, attempt: int = 1,
        completed_at: datetime | None = None) -> JobFact:
    done = completed_at if completed_at is not None or status.active else created_at + 5 * MIN
    return JobFact(f"job-{ver.tag}-{attempt}", TARGET, ver.id, status, attempt, created_at, done)


def policy(name: str, *rules: Mapping[str, Any]) -> Policy:
    raw = [{"id": f"{name}-{i}", **rule} for i, rule in enumerate(rules)]
    return Policy(f"pol-{name}", name, 1, 0, True, compile_selector("true"), parse_rules(raw))


def world(
    *, versions: Sequence[VersionFact] = (V1, V2), policies: Sequence[Policy] = (), jobs: Sequence[JobFact] = (),
    approvals: Mapping[VersionFact, Sequence[ApprovalFact]] | None = None, agent_id: str | None = AGENT,
    request: RedeployRequest | None = None,
) -> Snapshot:
    target = TargetFact(TARGET, "res-1", PROD, DEPLOYMENT)
    deployment = {"id": DEPLOYMENT, "systemId": SYSTEM, "name": "API", "slug": "api", "metadata": {},
                  "jobAgentId": agent_id, "jobAgentConfig": DEPLOYMENT_CONFIG}
    return Snapshot(
        policies=tuple(policies),
        targets={TARGET: target},
        resources={"res-1": Doc({"id": "res-1", "identifier": "res-1", "name": "res-1", "kind": "k8s",
                                 "metadata": {}, "config": {}})},
        environments={PROD: Doc({"id": PROD, "systemId": SYSTEM, "name": "production", "metadata": {}})},
        deployments={DEPLOYMENT: Doc(deployment)},
        system_environments={SYSTEM: (PROD,)},
        versions={DEPLOYMENT: tuple(sorted(versions, key=lambda v: (v.created_at, v.id), reverse=True))},
        version_docs={v.id: Doc(v.doc) for v in versions},
        jobs={TARGET: tuple(sorted(jobs, key=lambda j: (j.created_at, j.attempt), reverse=True))} if jobs else {},
        approvals={(v.id, PROD): tuple(a) for v, a in (approvals or {}).items()},
        overrides=(),
        environment_targets={(DEPLOYMENT, PROD): (TARGET,)},
        resource_targets={"res-1": (TARGET,)},
        requests={TARGET: request} if request is not None else {},
        job_agents={AGENT: AGENT_CONFIG},
    )


def the_job(result: Reconciled) -> CreateJob:
    assert len(result.actions) == 1, result.actions
    assert isinstance(result.actions[0], CreateJob)
    return result.actions[0]


# ------------------------------------------------------------------------------------- go


def test_go_creates_one_job_with_the_next_attempt_and_the_merged_config() -> None:
    history = [
        job(V1, JobStatus.SUCCESSFUL, T0 - 60 * HOUR, attempt=4),  # another version's attempts do not count
        job(V2, JobStatus.FAILURE, T0 - 3 * HOUR, attempt=1),
        job(V2, JobStatus.LOST, T0 - 2 * HOUR, attempt=2),
    ]
    result = reconcile(world(policies=[policy("retry", RETRY_5)], jobs=history), TARGET, T0)
    assert (result.decision.outcome, result.decision.desired) == (Outcome.GO, V2)
    assert the_job(result) == CreateJob(TARGET, V2.id, 3, AGENT, MERGED, "policy")
    assert (result.fulfils_request, result.next_evaluation_at) == (False, None)


def test_a_first_deploy_is_attempt_one() -> None:
    assert the_job(reconcile(world(), TARGET, T0)).attempt == 1


def test_config_layers_merge_agent_then_deployment_then_version_without_touching_their_inputs() -> None:
    layers = [dict(AGENT_CONFIG), dict(DEPLOYMENT_CONFIG), dict(VERSION_CONFIG)]
    assert merged_config(*layers) == MERGED
    assert layers == [AGENT_CONFIG, DEPLOYMENT_CONFIG, VERSION_CONFIG]
    assert AGENT_CONFIG["image"] == {"registry": "registry.a", "pull": "always"}
    deep = merged_config({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"d": 3}, "e": 4}}, {"a": {"b": {"f": 5}}})
    assert deep == {"a": {"b": {"c": 1, "d": 3, "f": 5}, "e": 4}}
    assert merged_config({"a": {"b": 1}}, {"a": None}) == {"a": None}  # a later scalar replaces an object
    assert merged_config() == {}


def test_without_a_job_agent_the_decision_stands_but_no_job_is_created() -> None:
    result = reconcile(world(agent_id=None), TARGET, T0)
    assert (result.decision.outcome, result.actions) == (Outcome.GO, ())
    with_agent = reconcile(world(), TARGET, T0)
    assert result.log_key != with_agent.log_key  # the log records why nothing happened


# ------------------------------------------------------------------------------------- no action

NO_ACTION = [
    pytest.param(dict(policies=[policy("approve", ONE_APPROVAL)]), Outcome.WAIT, "AwaitingGates", id="approval"),
    pytest.param(dict(policies=[policy("window", DENY_14Z)]), Outcome.WAIT, "AwaitingGates", id="deny-window"),
    pytest.param(dict(jobs=[job(V2, JobStatus.PENDING, T0 - MIN)]), Outcome.WAIT, "JobActive", id="active-job"),
    pytest.param(dict(jobs=[job(V2, JobStatus.IN_PROGRESS, T0 - MIN)]), Outcome.WAIT, "JobActive", id="in-progress"),
    pytest.param(dict(policies=[policy("freeze", DENY_ALL)]), Outcome.NO_GO, "AllCandidatesDenied", id="all-denied"),
    pytest.param(dict(jobs=[job(V2, JobStatus.SUCCESSFUL, T0 - HOUR)]), Outcome.NO_GO, "UpToDate", id="up-to-date"),
    pytest.param(dict(jobs=[job(V2, JobStatus.FAILURE, T0 - HOUR)]), Outcome.NO_GO, "RetriesExhausted",
                 id="failed-without-retry-rule"),
    pytest.param(dict(approvals={V1: VETO, V2: VETO}, policies=[policy("approve", ONE_APPROVAL)]), Outcome.NO_GO,
                 "AllCandidatesDenied", id="vetoed"),
]


@pytest.mark.parametrize(("facts", "outcome", "reason"), NO_ACTION)
def test_wait_and_no_go_create_nothing(facts: dict[str, Any], outcome: Outcome, reason: str) -> None:
    result = reconcile(world(**facts), TARGET, T0)
    assert (result.decision.outcome, result.decision.reason, result.actions) == (outcome, reason, ())
    assert result.fulfils_request is False


def test_a_job_is_created_from_the_instant_the_gates_allow() -> None:
    snap = world(policies=[policy("window", DENY_14Z)])
    before = reconcile(snap, TARGET, T0 + 59 * MIN)
    assert (before.actions, before.next_evaluation_at) == ((), T0 + HOUR)
    assert the_job(reconcile(snap, TARGET, T0 + HOUR)).version_id == V2.id


# ------------------------------------------------------------------------------------- redeploys


def request(ver: VersionFact, at: datetime = T0 - MIN) -> RedeployRequest:
    return RedeployRequest(ver.id, "operator", "roll back: 2.0.0 leaks memory", at)


DEPLOYED_1_THEN_2 = [
    job(V1, JobStatus.SUCCESSFUL, T0 - 50 * HOUR),
    job(V2, JobStatus.SUCCESSFUL, T0 - 2 * HOUR),
]


def test_a_rollback_request_makes_the_older_version_the_candidate_and_is_fulfilled() -> None:
    plain = reconcile(world(jobs=DEPLOYED_1_THEN_2), TARGET, T0)
    assert (plain.decision.outcome, plain.decision.reason, plain.actions) == (Outcome.NO_GO, "UpToDate", ())
    result = reconcile(world(jobs=DEPLOYED_1_THEN_2, request=request(V1)), TARGET, T0)
    assert (result.decision.outcome, result.decision.desired, result.decision.current) == (Outcome.GO, V1, V2)
    assert [c.version for c in result.decision.candidates] == [V1]
    assert the_job(result) == CreateJob(TARGET, V1.id, 2, AGENT, merged_config(AGENT_CONFIG, DEPLOYMENT_CONFIG),
                                        "rollback")
    assert result.fulfils_request is True


def test_a_redeploy_of_the_current_version_is_a_new_attempt() -> None:
    result = reconcile(world(jobs=DEPLOYED_1_THEN_2, request=request(V2)), TARGET, T0)
    assert the_job(result) == CreateJob(TARGET, V2.id, 2, AGENT, MERGED, "redeploy")
    assert result.fulfils_request is True


def test_a_request_still_obeys_every_gate_and_stays_open_until_a_job_is_created() -> None:
    gated = world(jobs=DEPLOYED_1_THEN_2, request=request(V1), policies=[policy("window", DENY_14Z)])
    waiting = reconcile(gated, TARGET, T0)
    assert (waiting.decision.outcome, waiting.actions, waiting.fulfils_request) == (Outcome.WAIT, (), False)
    assert waiting.next_evaluation_at == T0 + HOUR
    assert the_job(reconcile(gated, TARGET, T0 + HOUR)).reason == "rollback"
    busy = world(jobs=[*DEPLOYED_1_THEN_2, job(V2, JobStatus.IN_PROGRESS, T0, attempt=2)], request=request(V1))
    blocked = reconcile(busy, TARGET, T0)
    assert (blocked.decision.reason, blocked.actions, blocked.fulfils_request) == ("JobActive", (), False)


# ------------------------------------------------------------------------------------- log key


def key(**facts: Any) -> str:
    at = facts.pop("at", T0)
    return reconcile(world(**facts), TARGET, at).log_key


APPROVAL_AND_WINDOW = [policy("approve", ONE_APPROVAL), policy("window", DENY_14Z)]


def test_the_log_key_ignores_what_does_not_change_the_decision() -> None:
    waiting = key(policies=APPROVAL_AND_WINDOW)
    assert key(policies=APPROVAL_AND_WINDOW, at=T0 + 30 * MIN) == waiting  # time passes, same blockers
    two = [policy("approve", {"anyApproval": {"minApprovals": 2}})]
    assert key(policies=two) == key(policies=two, approvals={V2: APPROVED})  # 0/2 -> 1/2: the message, not the reason
    warned = [policy("approve", {**ONE_APPROVAL, "enforcement": "warn"})]
    assert key(policies=warned) == key()  # a warning never holds a deploy back


def test_the_log_key_changes_with_the_outcome_the_desired_version_or_a_blocking_reason() -> None:
    keys = {
        "go 2.0.0": key(),
        "go 3.0.0": key(versions=[V1, V2, V3]),
        "wait approval+window": key(policies=APPROVAL_AND_WINDOW),
        "wait window": key(policies=APPROVAL_AND_WINDOW, approvals={V2: APPROVED}),
        "wait job": key(jobs=[job(V2, JobStatus.PENDING, T0)]),
        "no-go up to date": key(jobs=[job(V2, JobStatus.SUCCESSFUL, T0 - HOUR)]),
        "no-go vetoed": key(policies=[policy("approve", ONE_APPROVAL)], approvals={V1: VETO, V2: VETO}),
        "no-go frozen": key(policies=[policy("freeze", DENY_ALL)]),
    }
    assert len(set(keys.values())) == len(keys), keys


def test_the_log_key_follows_the_blockers_of_the_version_it_waits_for_not_only_the_newest() -> None:
    # 3.0.0 is recalled (denied, and unapproved); 2.0.0 waits for an approval and the window, then for the
    # window only: the newest candidate's blockers stay the same, the focus's change.
    policies = [policy("recall", RECALL_3), *APPROVAL_AND_WINDOW]
    both = reconcile(world(versions=[V2, V3], policies=policies), TARGET, T0)
    window_only = reconcile(world(versions=[V2, V3], policies=policies, approvals={V2: APPROVED}), TARGET, T0)
    assert both.decision.blocking_reasons != window_only.decision.blocking_reasons
    assert both.log_key != window_only.log_key
