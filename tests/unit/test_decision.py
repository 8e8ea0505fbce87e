"""The decision per release target (SPEC §3, §5): candidates, merging, overrides, eligibility, timing.

Pure and table-driven: every test builds a ``Snapshot`` by hand with the builders below and calls
``decide`` at a named instant. T0 is Monday 2026-03-02 14:00Z, 09:00 in New York.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.cel import Doc
from controller.decision import Decision, Outcome, RuleVerdict, decide, document
from controller.engine import Engine
from controller.facts import (
    ApprovalFact,
    ApprovalStatus,
    JobFact,
    JobStatus,
    TargetFact,
    VersionFact,
    VersionStatus,
)
from controller.policy import Policy, compile_selector, parse_rules
from controller.rules.gradual_rollout import rollout_positions
from controller.rules.verdict import Status
from controller.snapshot import OverrideFact, Snapshot

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # Monday 09:00 in New York (EST)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)

SYSTEM = "sys-payments"
STAGING, PROD = "env-staging", "env-prod"
DEPLOYMENT = "dep-api"
TARGET = "t-prod-1"  # the focus target of every test: res-1 in production
PROD_TARGETS = ("t-prod-1", "t-prod-2", "t-prod-3")
STAGING_TARGET = "t-staging-1"

# Weekdays Monday to Thursday, 09:00-17:00 New York: T0 opens it; 14:00Z-22:00Z in winter.
OFFICE_HOURS = {
    "rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH;BYHOUR=9", "durationMinutes": 480, "timezone": "America/New_York"
}


# ------------------------------------------------------------------------------------- builders


def at(hours: float = 0, minutes: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes)


def version(
    tag: str, created_at: datetime, status: VersionStatus = VersionStatus.READY, created_by: str | None = "ci",
    metadata: Mapping[str, str] | None = None,
) -> VersionFact:
    doc = {
        "id": f"ver-{tag}",
        "deploymentId": DEPLOYMENT,
        "tag": tag,
        "name": tag,
        "status": status.value,
        "config": {},
        "metadata": dict(metadata or {}),
        "createdBy": created_by,
        "createdAt": created_at,
    }
    return VersionFact(f"ver-{tag}", DEPLOYMENT, tag, status, created_at, created_by, doc)


V1 = version("1.0.0", at(-72))
V2 = version("2.0.0", at(-48))
V3 = version("3.0.0", at(-24))


def job(
    ver: VersionFact, status: JobStatus, created_at: datetime, completed_at: datetime | None = None, *,
    attempt: int = 1, target_id: str = TARGET,
) -> JobFact:
    return JobFact(f"job-{target_id}-{ver.tag}-{attempt}-{status.value}", target_id, ver.id, status, attempt,
                   created_at, completed_at)


def deployed(ver: VersionFact, completed_at: datetime, target_id: str = TARGET) -> JobFact:
    return job(ver, JobStatus.SUCCESSFUL, completed_at - 10 * MIN, completed_at, target_id=target_id)


def approved(user: str, created_at: datetime) -> ApprovalFact:
    return ApprovalFact(user, ApprovalStatus.APPROVED, created_at)


def rejected(user: str, created_at: datetime) -> ApprovalFact:
    return ApprovalFact(user, ApprovalStatus.REJECTED, created_at)


def policy(
    name: str, *rules: Mapping[str, Any], priority: int = 0, selector: str = "true", enabled: bool = True
) -> Policy:
    """Rules get stable ids (``{name}-{index}``) unless they name one, so decision ids are comparable."""
    raw = [{"id": f"{name}-{i}", **rule} for i, rule in enumerate(rules)]
    return Policy(f"pol-{name}", name, 1, priority, enabled, compile_selector(selector), parse_rules(raw))


OVERRIDE_CREATED_AT, OVERRIDE_EXPIRES_AT = T0 - HOUR, T0 + 4 * HOUR


def override(
    ver: VersionFact, *, expires_at: datetime = OVERRIDE_EXPIRES_AT, created_at: datetime = OVERRIDE_CREATED_AT,
    environment_id: str | None = None,
    resource_id: str | None = None, policy_id: str | None = None, rule_types: Iterable[str] | None = None,
) -> OverrideFact:
    return OverrideFact(
        id=f"ovr-{ver.tag}", version_id=ver.id, environment_id=environment_id, resource_id=resource_id,
        policy_id=policy_id, rule_types=frozenset(rule_types) if rule_types is not None else None,
        reason="incident 42", created_by="oncall", created_at=created_at, expires_at=expires_at,
    )


def _target(target_id: str) -> TargetFact:
    if "staging" in target_id:
        return TargetFact(target_id, "res-s1", STAGING, DEPLOYMENT)
    return TargetFact(target_id, f"res-{target_id.rsplit('-', 1)[1]}", PROD, DEPLOYMENT)


def world(
    *,
    versions: Sequence[VersionFact] = (V1, V2, V3),
    policies: Sequence[Policy] = (),
    jobs: Sequence[JobFact] = (),
    approvals: Mapping[tuple[VersionFact, str], Sequence[ApprovalFact]] | None = None,
    overrides: Sequence[OverrideFact] = (),
    deployment_metadata: Mapping[str, str] | None = None,
) -> Snapshot:
    """One system with staging (one target) and production (three targets) for deployment ``api``."""
    target_ids = (*PROD_TARGETS, STAGING_TARGET)
    targets = {t: _target(t) for t in target_ids}
    environments = {
        env_id: Doc({"id": env_id, "systemId": SYSTEM, "name": name, "metadata": {}, "description": ""})
        for env_id, name in ((STAGING, "staging"), (PROD, "production"))
    }
    resources = {
        t.resource_id: Doc({"id": t.resource_id, "identifier": t.resource_id, "name": t.resource_id, "kind": "k8s",
                            "metadata": {"region": "us-east-1"}, "config": {}})
        for t in targets.values()
    }
    deployment = {"id": DEPLOYMENT, "systemId": SYSTEM, "name": "API", "slug": "api",
                  "metadata": dict(deployment_metadata or {"tier": "critical"}), "jobAgentConfig": {}}
    newest_first = tuple(sorted(versions, key=lambda v: (v.created_at, v.id), reverse=True))
    jobs_by_target: dict[str, list[JobFact]] = {}
    for j in sorted(jobs, key=lambda j: j.created_at, reverse=True):
        jobs_by_target.setdefault(j.target_id, []).append(j)
    env_targets: dict[tuple[str, str], list[str]] = {}
    for t in targets.values():
        env_targets.setdefault((DEPLOYMENT, t.environment_id), []).append(t.id)
    return Snapshot(
        policies=tuple(policies),
        targets=targets,
        resources=resources,
        environments=environments,
        deployments={DEPLOYMENT: Doc(deployment)},
        system_environments={SYSTEM: (PROD, STAGING)},
        versions={DEPLOYMENT: newest_first},
        version_docs={v.id: Doc(v.doc) for v in versions},
        jobs={k: tuple(v) for k, v in jobs_by_target.items()},
        approvals={(v.id, env): tuple(a) for (v, env), a in (approvals or {}).items()},
        overrides=tuple(overrides),
        environment_targets={k: tuple(v) for k, v in env_targets.items()},
        resource_targets={t.resource_id: (t.id,) for t in targets.values()},
    )


# ------------------------------------------------------------------------------------- readers


def tags(decision: Decision) -> list[str]:
    return [c.version.tag for c in decision.candidates]


def desired_tag(decision: Decision) -> str | None:
    return decision.desired.tag if decision.desired else None


def verdicts(decision: Decision, ver: VersionFact, rule_type: str | None = None) -> list[RuleVerdict]:
    candidate = next(c for c in decision.candidates if c.version.id == ver.id)
    return [rv for rv in candidate.verdicts if rule_type is None or rv.rule_type == rule_type]


def only(decision: Decision, ver: VersionFact, rule_type: str) -> RuleVerdict:
    found = verdicts(decision, ver, rule_type)
    assert len(found) == 1, found
    return found[0]


def job_verdict(decision: Decision, rule_type: str) -> RuleVerdict:
    return next(rv for rv in decision.job_verdicts if rv.rule_type == rule_type)


NOT_V3 = {"versionSelector": {"selector": "version.tag != '3.0.0'", "description": "3.0.0 is recalled"}}
ONE_APPROVAL = {"anyApproval": {"minApprovals": 1}}
ROLLOUT = {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": 3600}}


# ------------------------------------------------------------------------------------- candidates


def test_candidates_are_scanned_newest_first_and_the_scan_stops_at_the_first_allowed() -> None:
    decision = decide(world(), TARGET, T0)
    assert (decision.outcome, desired_tag(decision), tags(decision)) == (Outcome.GO, "3.0.0", ["3.0.0"])
    blocked = decide(world(policies=[policy("recall", NOT_V3)]), TARGET, T0)
    assert (blocked.outcome, desired_tag(blocked), tags(blocked)) == (Outcome.GO, "2.0.0", ["3.0.0", "2.0.0"])
    assert only(blocked, V3, "versionSelector").verdict.reason == "VersionNotSelected"
    assert only(blocked, V3, "versionSelector").verdict.message == "3.0.0 is recalled"


def test_versions_older_than_the_current_are_never_candidates() -> None:
    snap = world(policies=[policy("recall", NOT_V3)], jobs=[deployed(V2, at(-1))])
    decision = decide(snap, TARGET, T0)
    assert tags(decision) == ["3.0.0", "2.0.0"]  # 1.0.0 is older than the current 2.0.0
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.NO_GO, "UpToDate", "2.0.0")
    assert decision.current == V2


def test_asking_for_an_older_version_is_a_no_downgrade_no_go() -> None:
    snap = world(jobs=[deployed(V2, at(-1))])
    decision = decide(snap, TARGET, T0, version_id=V1.id)
    assert (decision.outcome, decision.reason, decision.candidates) == (Outcome.NO_GO, "NoDowngrade", ())
    assert decision.eligible_at is None
    asked_current = decide(snap, TARGET, T0, version_id=V2.id)
    assert (asked_current.outcome, asked_current.reason) == (Outcome.NO_GO, "UpToDate")
    asked_newer = decide(snap, TARGET, T0, version_id=V3.id)
    assert (asked_newer.outcome, desired_tag(asked_newer)) == (Outcome.GO, "3.0.0")


@pytest.mark.parametrize("status", [s for s in VersionStatus if s is not VersionStatus.READY])
def test_a_version_that_is_not_ready_is_not_a_candidate(status: VersionStatus) -> None:
    v4 = version("4.0.0", at(-1), status)
    snap = world(versions=[V1, V2, V3, v4])
    decision = decide(snap, TARGET, T0)
    assert (desired_tag(decision), tags(decision)) == ("3.0.0", ["3.0.0"])
    asked = decide(snap, TARGET, T0, version_id=v4.id)
    assert (asked.outcome, asked.reason, asked.candidates) == (Outcome.NO_GO, "VersionNotReady", ())


def test_no_ready_version_at_all_is_a_no_go() -> None:
    decision = decide(world(versions=[version("1.0.0", at(-1), VersionStatus.BUILDING)]), TARGET, T0)
    assert (decision.outcome, decision.reason, decision.desired) == (Outcome.NO_GO, "NoCandidates", None)


def test_desired_is_the_first_candidate_whose_blocking_gates_allow_and_newer_verdicts_are_reported() -> None:
    # 3.0.0 lacks its approval, 2.0.0 has it: 2.0.0 deploys, and 3.0.0's verdict says why not it.
    snap = world(policies=[policy("approve", ONE_APPROVAL)], approvals={(V2, PROD): [approved("alice", at(-2))]})
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, desired_tag(decision), tags(decision)) == (Outcome.GO, "2.0.0", ["3.0.0", "2.0.0"])
    newer = only(decision, V3, "anyApproval").verdict
    assert (newer.status, newer.reason, newer.message) == (Status.PENDING, "AwaitingApproval", "0/1 approvals")
    body = document(decision)
    assert [c["outcome"] for c in body["candidates"]] == ["pending", "allowed"]
    assert body["candidates"][0]["verdicts"][0]["ruleType"] == "anyApproval"
    assert body["desiredVersion"] == {"id": V2.id, "tag": "2.0.0"}


def test_approvals_are_per_environment() -> None:
    snap = world(policies=[policy("approve", ONE_APPROVAL)], approvals={(V3, STAGING): [approved("alice", at(-2))]})
    assert decide(snap, STAGING_TARGET, T0).outcome is Outcome.GO
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, decision.reason) == (Outcome.WAIT, "AwaitingGates")
    assert decision.eligible_at is None and decision.waiting_for == ("anyApproval: 0/1 approvals",)


# ------------------------------------------------------------------------------------- merging


@pytest.mark.parametrize(
    ("alpha_priority", "beta_priority", "applies", "loses"),
    [(10, 20, "beta", "alpha"), (20, 10, "alpha", "beta"), (5, 5, "alpha", "beta"), (-1, -1, "alpha", "beta")],
)
def test_the_highest_priority_gradual_rollout_applies_ties_by_name(
    alpha_priority: int, beta_priority: int, applies: str, loses: str
) -> None:
    slow = {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": 7200}}
    fast = {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": 60}}
    # Listed beta first: the order of the snapshot must not matter.
    snap = world(policies=[policy("beta", fast, priority=beta_priority),
                           policy("alpha", slow, priority=alpha_priority)])
    decision = decide(snap, TARGET, at(100))
    rollout = only(decision, V3, "gradualRollout")
    assert rollout.policy is not None and rollout.policy.name == applies
    assert [(a.policy.name, a.rule.type) for a in decision.overridden] == [(loses, "gradualRollout")]
    assert document(decision)["overriddenRules"] == [
        {"policyId": f"pol-{loses}", "policyName": loses, "ruleId": f"{loses}-0", "ruleType": "gradualRollout"}
    ]
    position = rollout_positions(PROD_TARGETS, V3.id)[TARGET]
    interval = 60 if applies == "beta" else 7200
    assert rollout.verdict.details["offsetSeconds"] == position * interval


def test_the_highest_priority_retry_rule_applies() -> None:
    failed = job(V3, JobStatus.FAILURE, at(-1), at(-1) + 5 * MIN)
    lenient = {"retry": {"maxRetries": 3, "backoffSeconds": 60}}
    strict = {"retry": {"maxRetries": 0}}
    for priorities, outcome, reason in [((1, 0), Outcome.GO, "Eligible"), ((0, 1), Outcome.NO_GO, "RetriesExhausted")]:
        snap = world(jobs=[failed], policies=[policy("lenient", lenient, priority=priorities[0]),
                                              policy("strict", strict, priority=priorities[1])])
        decision = decide(snap, TARGET, T0)
        assert (decision.outcome, decision.reason) == (outcome, reason)
        assert [a.policy.name for a in decision.overridden] == ["strict" if outcome is Outcome.GO else "lenient"]


def test_every_non_single_rule_of_every_matched_policy_is_a_gate() -> None:
    snap = world(
        policies=[
            policy("two-approvals", {"anyApproval": {"minApprovals": 2}}, priority=10),
            policy("one-approval", ONE_APPROVAL, {"condition": {"expression": "resource.kind == 'k8s'"}}),
            policy("recall", NOT_V3, priority=-5),
        ],
        approvals={(V2, PROD): [approved("alice", at(-3))], (V3, PROD): [approved("alice", at(-3))]},
    )
    decision = decide(snap, TARGET, T0)
    assert [(rv.policy.name if rv.policy else None, rv.rule_type) for rv in verdicts(decision, V3)] == [
        ("two-approvals", "anyApproval"), ("one-approval", "anyApproval"), ("one-approval", "condition"),
        ("recall", "versionSelector"),
    ]
    assert [rv.verdict.status for rv in verdicts(decision, V3)] == [
        Status.PENDING, Status.ALLOWED, Status.ALLOWED, Status.DENIED
    ]
    assert decision.candidates[0].status is Status.DENIED  # denied beats pending
    assert (decision.outcome, decision.reason) == (Outcome.WAIT, "AwaitingGates")  # 2.0.0 still waits
    assert decision.candidates[1].status is Status.PENDING


def test_a_warn_rule_never_blocks_and_shows_in_warnings() -> None:
    warned = {**NOT_V3, "enforcement": "warn"}
    decision = decide(world(policies=[policy("advice", warned)]), TARGET, T0)
    assert (decision.outcome, desired_tag(decision)) == (Outcome.GO, "3.0.0")
    [warning] = decision.warnings
    assert (warning.rule_type, warning.verdict.status, warning.verdict.reason) == (
        "versionSelector", Status.DENIED, "VersionNotSelected")
    body = document(decision)["warnings"]
    assert [(w["ruleType"], w["enforcement"], w["status"], w["policyName"]) for w in body] == [
        ("versionSelector", "warn", "denied", "advice")]
    assert "versionSelector" not in " ".join(decision.blocking_reasons)


@pytest.mark.parametrize(
    ("selector", "enabled", "matched"),
    [
        ("true", True, True),
        ("true", False, False),
        ("environment.name == 'production' && deployment.metadata['tier'] == 'critical'", True, True),
        ("environment.name == 'staging'", True, False),
        ("deployment.metadata['team'] == 'payments'", True, False),  # a missing key does not match
        ("deployment.metadata.team == 'payments'", True, False),
        ("resource.metadata['region'] == 'us-east-1'", True, True),
        ("!(deployment.metadata['team'] == 'payments')", True, False),  # an error never turns into a match
    ],
)
def test_only_enabled_matching_policies_apply(selector: str, enabled: bool, matched: bool) -> None:
    snap = world(policies=[policy("gate", NOT_V3, selector=selector, enabled=enabled)])
    decision = decide(snap, TARGET, T0)
    assert [p.name for p in decision.policies] == (["gate"] if matched else [])
    assert desired_tag(decision) == ("2.0.0" if matched else "3.0.0")
    assert [p["name"] for p in document(decision)["policies"]] == [p.name for p in decision.policies]


@pytest.mark.parametrize("rule", [
    {"versionSelector": {"selector": "version.metadata['channel'] == 'stable'"}},
    {"versionSelector": {"selector": "!(version.metadata['channel'] == 'stable')"}},
    {"condition": {"expression": "resource.metadata.rack == 'r1'", "reason": "WrongRack"}},
    {"versionSelector": {"selector": "semver(version.tag).compare('banana') >= 0"}},
])
def test_an_evaluation_error_fails_closed(rule: Mapping[str, Any]) -> None:
    decision = decide(world(policies=[policy("broken", rule)]), TARGET, T0)
    assert (decision.outcome, decision.reason, decision.desired) == (Outcome.NO_GO, "AllCandidatesDenied", None)
    for candidate in decision.candidates:
        [rv] = candidate.verdicts
        assert (rv.verdict.status, rv.verdict.reason) == (Status.DENIED, "EvaluationError")
        assert rv.verdict.message
    assert tags(decision) == ["3.0.0", "2.0.0", "1.0.0"]


# ------------------------------------------------------------------------------------- overrides

GATED = policy("gated", ONE_APPROVAL, {"deploymentWindow": OFFICE_HOURS})


@pytest.mark.parametrize(
    ("scope", "applies"),
    [
        ({}, True),
        ({"environment_id": PROD}, True),
        ({"environment_id": STAGING}, False),
        ({"resource_id": "res-1"}, True),
        ({"resource_id": "res-2"}, False),
        ({"policy_id": "pol-gated"}, True),
        ({"policy_id": "pol-other"}, False),
        ({"rule_types": ["anyApproval"]}, True),
        ({"rule_types": ["anyApproval", "versionCooldown"]}, True),
        ({"rule_types": ["deploymentWindow"]}, False),
        (dict(environment_id=PROD, resource_id="res-1", policy_id="pol-gated", rule_types=["anyApproval"]), True),
    ],
)
def test_an_override_allows_the_gates_it_names(scope: dict[str, Any], applies: bool) -> None:
    snap = world(versions=[V3], policies=[GATED], overrides=[override(V3, **scope)])
    decision = decide(snap, TARGET, T0)
    approval = only(decision, V3, "anyApproval").verdict
    if applies:
        assert (approval.status, approval.reason) == (Status.ALLOWED, "Overridden")
        assert (approval.satisfied_at, approval.next_check_at) == (at(-1), at(4))
        assert approval.details["replaced"] == {"status": "pending", "reason": "AwaitingApproval"}
        assert "oncall" in approval.message and "incident 42" in approval.message
        assert (decision.outcome, decision.next_evaluation_at) == (Outcome.GO, at(4))
    else:
        assert (approval.status, approval.reason) == (Status.PENDING, "AwaitingApproval")
        assert decision.outcome is Outcome.WAIT
    # The window is inside at T0: allowed on its own, never touched by the override.
    assert only(decision, V3, "deploymentWindow").verdict.reason == "InsideDeploymentWindow"


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (at(-1) - MIN, "AwaitingApproval"),
        (at(-1), "Overridden"),
        (at(4) - MIN, "Overridden"),
        (at(4), "AwaitingApproval"),
    ],
)
def test_an_override_holds_from_creation_until_expiry(now: datetime, reason: str) -> None:
    snap = world(versions=[V3], policies=[policy("approve", ONE_APPROVAL)], overrides=[override(V3)])
    assert only(decide(snap, TARGET, now), V3, "anyApproval").verdict.reason == reason


def test_an_override_only_covers_its_version() -> None:
    snap = world(policies=[policy("approve", ONE_APPROVAL)], overrides=[override(V2)])
    decision = decide(snap, TARGET, T0)
    assert (desired_tag(decision), tags(decision)) == ("2.0.0", ["3.0.0", "2.0.0"])
    assert only(decision, V3, "anyApproval").verdict.reason == "AwaitingApproval"


def test_an_overridden_approval_starts_a_gradual_rollout_at_the_override() -> None:
    rollout = {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": 600}}
    snap = world(versions=[V3], policies=[policy("p", ONE_APPROVAL, rollout)],
                 overrides=[override(V3, created_at=at(1), rule_types=["anyApproval"])])
    verdict = only(decide(snap, TARGET, at(1)), V3, "gradualRollout").verdict
    position = rollout_positions(PROD_TARGETS, V3.id)[TARGET]
    assert verdict.details["rolloutAt"] == (at(1) + position * 10 * MIN).isoformat().replace("+00:00", "Z")
    # An override naming no rule type covers the rollout too: the last target need not wait for its slot.
    everything = world(versions=[V3], policies=[policy("p", ONE_APPROVAL, ROLLOUT)], overrides=[override(V3)])
    last = max(PROD_TARGETS, key=rollout_positions(PROD_TARGETS, V3.id).__getitem__)
    decision = decide(everything, last, T0)
    assert only(decision, V3, "gradualRollout").verdict.reason == "Overridden" and decision.outcome is Outcome.GO


# ------------------------------------------------------------------------------------- job eligibility


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.IN_PROGRESS, JobStatus.ACTION_REQUIRED])
def test_an_active_job_makes_the_target_wait(status: JobStatus) -> None:
    snap = world(jobs=[deployed(V2, at(-5)), job(V3, status, at(-1))])
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.WAIT, "JobActive", "3.0.0")
    assert decision.eligible_at is None and decision.next_evaluation_at is None
    assert decision.waiting_for and decision.waiting_for[0].startswith("activeJob: ")
    assert job_verdict(decision, "activeJob").verdict.details["status"] == status.value


@pytest.mark.parametrize("status", [JobStatus.FAILURE, JobStatus.LOST])
def test_without_a_retry_rule_a_failed_release_is_not_retried(status: JobStatus) -> None:
    snap = world(jobs=[deployed(V2, at(-5)), job(V3, status, at(-2), at(-1))])
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.NO_GO, "RetriesExhausted", "3.0.0")
    assert decision.eligible_at is None
    assert job_verdict(decision, "retry").policy is None
    assert decide(snap, TARGET, at(24 * 30)).outcome is Outcome.NO_GO  # waiting does not help


@pytest.mark.parametrize(
    ("strategy", "failures", "backoff"),
    [("linear", 1, 300), ("linear", 2, 600), ("exponential", 1, 300), ("exponential", 3, 1200)],
)
def test_a_retry_rule_waits_for_its_backoff(strategy: str, failures: int, backoff: int) -> None:
    rule = {"retry": {"maxRetries": 3, "backoffSeconds": 300, "backoffStrategy": strategy}}
    completed_at = at(minutes=-2)
    attempts = [
        job(V3, JobStatus.FAILURE, completed_at - (failures - n) * HOUR - MIN,
            completed_at - (failures - n) * HOUR, attempt=n)
        for n in range(1, failures + 1)
    ]
    snap = world(policies=[policy("retry", rule)], jobs=attempts)
    decision = decide(snap, TARGET, T0)
    eligible_at = completed_at + timedelta(seconds=backoff)
    assert (decision.outcome, decision.reason) == (Outcome.WAIT, "RetryBackoff")
    assert (decision.eligible_at, decision.next_evaluation_at) == (eligible_at, eligible_at)
    retry = job_verdict(decision, "retry")
    assert retry.policy is not None and retry.policy.name == "retry"
    assert decide(snap, TARGET, eligible_at - timedelta(microseconds=1)).outcome is Outcome.WAIT
    assert decide(snap, TARGET, eligible_at).outcome is Outcome.GO


def test_retries_are_exhausted_after_max_retries() -> None:
    rule = {"retry": {"maxRetries": 1, "backoffSeconds": 60}}
    attempts = [job(V3, JobStatus.FAILURE, at(-3), at(-3) + MIN, attempt=1),
                job(V3, JobStatus.FAILURE, at(-2), at(-2) + MIN, attempt=2)]
    decision = decide(world(policies=[policy("retry", rule)], jobs=attempts), TARGET, T0)
    assert (decision.outcome, decision.reason) == (Outcome.NO_GO, "RetriesExhausted")


def test_already_on_the_desired_version_is_up_to_date() -> None:
    decision = decide(world(jobs=[deployed(V3, at(-1))]), TARGET, T0)
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.NO_GO, "UpToDate", "3.0.0")
    assert decision.current == V3 and decision.job_verdicts == () and decision.eligible_at is None


def test_the_current_version_is_the_latest_success_by_completion() -> None:
    jobs = [deployed(V3, at(-5)), deployed(V2, at(-1)), job(V3, JobStatus.FAILURE, at(-1), at(-0.5), attempt=2)]
    decision = decide(world(jobs=jobs), TARGET, T0)
    assert decision.current == V2
    # 3.0.0 succeeded here before: it is not redeployed automatically.
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.NO_GO, "AlreadySucceeded", "3.0.0")


# ------------------------------------------------------------------------------------- timing


def test_next_evaluation_is_the_earliest_check_over_every_verdict_including_blocked_newer_versions() -> None:
    # 3.0.0's approval is stamped at T0+2h (a decision asked about the past): a change point.
    # 2.0.0 is approved and inside the window, which closes at T0+8h.
    snap = world(
        policies=[policy("gated", ONE_APPROVAL, {"deploymentWindow": OFFICE_HOURS})],
        approvals={(V3, PROD): [approved("alice", at(2))], (V2, PROD): [approved("bob", at(-1))]},
    )
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, desired_tag(decision)) == (Outcome.GO, "2.0.0")
    assert only(decision, V3, "anyApproval").verdict.next_check_at == at(2)
    assert only(decision, V2, "deploymentWindow").verdict.next_check_at == at(8)
    assert decision.next_evaluation_at == at(2)
    assert desired_tag(decide(snap, TARGET, at(2))) == "3.0.0"


def test_a_newer_version_in_cooldown_waits_while_the_current_one_stays() -> None:
    snap = world(policies=[policy("cool", {"versionCooldown": {"intervalSeconds": 3600}})],
                 jobs=[deployed(V2, at(minutes=-5))])
    decision = decide(snap, TARGET, T0)
    # The reference job was created 15 minutes ago: 3.0.0 may start 45 minutes from now.
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.WAIT, "AwaitingGates", "2.0.0")
    assert only(decision, V3, "versionCooldown").verdict.reason == "VersionCooldown"
    assert decision.next_evaluation_at == decision.eligible_at == at(minutes=45)
    assert decide(snap, TARGET, at(minutes=45)).outcome is Outcome.GO


@pytest.mark.parametrize(
    ("now", "outcome", "eligible_at"),
    [
        (T0, Outcome.GO, T0),
        (at(8) - MIN, Outcome.GO, at(8) - MIN),
        (at(8), Outcome.WAIT, at(24)),  # Monday 17:00 New York: Tuesday 09:00
        # Thursday 17:00: next Monday 09:00, which is 13:00Z after the change to EDT on March 8.
        (at(24 * 3 + 8), Outcome.WAIT, datetime(2026, 3, 9, 13, tzinfo=UTC)),
        (at(24 * 7 + 8), Outcome.WAIT, datetime(2026, 3, 10, 13, tzinfo=UTC)),
    ],
)
def test_eligible_at_is_the_next_window_opening(now: datetime, outcome: Outcome, eligible_at: datetime) -> None:
    decision = decide(world(policies=[policy("office", {"deploymentWindow": OFFICE_HOURS})]), TARGET, now)
    assert (decision.outcome, decision.eligible_at) == (outcome, eligible_at)


def test_eligible_at_is_none_when_a_blocker_is_not_time_based() -> None:
    snap = world(policies=[policy("gated", ONE_APPROVAL, {"deploymentWindow": OFFICE_HOURS})])
    decision = decide(snap, TARGET, at(8))
    assert (decision.outcome, decision.eligible_at) == (Outcome.WAIT, None)
    assert decision.next_evaluation_at == at(24)
    assert decision.waiting_for == ("anyApproval: 0/1 approvals",)
    assert document(decision)["waitingFor"] == ["anyApproval: 0/1 approvals"]


def test_the_decision_id_is_deterministic() -> None:
    snap = world(policies=[policy("gated", ONE_APPROVAL)], approvals={(V2, PROD): [approved("alice", at(-2))]})
    first, second = decide(snap, TARGET, T0), decide(snap, TARGET, T0)
    assert first.decision_id == second.decision_id and first.decision_id
    assert document(first) == document(second)
    rebuilt = world(policies=[policy("gated", ONE_APPROVAL)], approvals={(V2, PROD): [approved("alice", at(-2))]})
    assert decide(rebuilt, TARGET, T0).decision_id == first.decision_id
    assert decide(snap, TARGET, T0 + MIN).decision_id != first.decision_id
    assert decide(snap, "t-prod-2", T0).decision_id != first.decision_id
    changed = world(policies=[policy("gated", ONE_APPROVAL)], approvals={(V3, PROD): [approved("alice", at(-2))]})
    assert decide(changed, TARGET, T0).decision_id != first.decision_id


# ------------------------------------------------------------------------------------- rollout start



def rollout_at(decision: Decision, target_id: str = TARGET) -> datetime | None:
    verdict = only(decision, V3, "gradualRollout").verdict
    if "rolloutAt" not in verdict.details:
        return None
    return datetime.fromisoformat(verdict.details["rolloutAt"])


def offset(target_id: str, interval: timedelta = HOUR) -> timedelta:
    return rollout_positions(PROD_TARGETS, V3.id)[target_id] * interval


@pytest.mark.parametrize(
    ("approvals", "windowed", "start"),
    [
        # No version-level gate: the rollout starts at the version's creation.
        ([], False, V3.created_at),
        # The latest satisfiedAt of the approval gates (two policies: 1 and 2 approvals).
        ([approved("alice", at(-5)), approved("bob", at(-3))], False, at(-3)),
        # Inside the window (Monday 10:00 New York): stays.
        ([approved("alice", at(-5)), approved("bob", at(1))], True, at(1)),
        # Before the window (Monday 06:00 New York): moves to its opening at 09:00.
        ([approved("alice", at(-5)), approved("bob", at(-3))], True, T0),
        # Thursday 18:00 New York: moves to next Monday 09:00 (EDT by then: 13:00Z).
        ([approved("alice", at(-5)), approved("bob", at(24 * 3 + 9))], True, datetime(2026, 3, 9, 13, tzinfo=UTC)),
    ],
)
def test_gradual_rollout_starts_at_the_latest_satisfied_gate_moved_into_the_window(
    approvals: list[ApprovalFact], windowed: bool, start: datetime
) -> None:
    gates: list[Policy] = [policy("rollout", ROLLOUT, priority=5)]
    if approvals:
        gates += [policy("one", ONE_APPROVAL), policy("two", {"anyApproval": {"minApprovals": 2}})]
    if windowed:
        gates.append(policy("office", {"deploymentWindow": OFFICE_HOURS}))
    snap = world(versions=[V3], policies=gates, approvals={(V3, PROD): approvals})
    now = at(24 * 10)  # every approval is in the past
    for target_id in PROD_TARGETS:
        decision = decide(snap, target_id, now)
        assert rollout_at(decision) == start + offset(target_id), target_id


def test_gradual_rollout_waits_without_a_time_while_a_gate_is_unsatisfied() -> None:
    snap = world(versions=[V3], policies=[policy("p", {"anyApproval": {"minApprovals": 2}}, ROLLOUT)],
                 approvals={(V3, PROD): [approved("alice", at(-1))]})
    decision = decide(snap, TARGET, T0)
    verdict = only(decision, V3, "gradualRollout").verdict
    assert (verdict.status, verdict.reason, verdict.next_check_at) == (Status.PENDING, "AwaitingGates", None)
    assert decision.eligible_at is None


def test_gradual_rollout_targets_go_one_after_another() -> None:
    snap = world(versions=[V3], policies=[policy("p", ONE_APPROVAL, ROLLOUT)],
                 approvals={(V3, PROD): [approved("alice", T0)]})
    by_position = sorted(PROD_TARGETS, key=rollout_positions(PROD_TARGETS, V3.id).__getitem__)
    for position, target_id in enumerate(by_position):
        decision = decide(snap, target_id, T0)
        assert decision.eligible_at == T0 + position * HOUR, target_id
        assert decision.outcome is (Outcome.GO if position == 0 else Outcome.WAIT)
        assert decide(snap, target_id, T0 + position * HOUR).outcome is Outcome.GO


def test_a_target_already_on_the_version_is_allowed_by_the_rollout() -> None:
    snap = world(versions=[V3], policies=[policy("p", {"anyApproval": {"minApprovals": 2}}, ROLLOUT)],
                 jobs=[deployed(V3, at(-1))])
    decision = decide(snap, TARGET, T0)
    assert only(decision, V3, "gradualRollout").verdict.reason == "AlreadyDeployed"
    assert (decision.outcome, decision.reason) == (Outcome.NO_GO, "UpToDate")


# ------------------------------------------------------------------------------------- regressions


@pytest.mark.parametrize("now", [at(-1), at(8), at(24 * 4)])  # before, after and between windows
def test_a_target_on_the_newest_version_outside_its_window_is_up_to_date_not_waiting(now: datetime) -> None:
    # Regression: the current version's own window made the decision "wait" with no ETA and nothing
    # to wait for, and it flipped between wait and no-go at every window edge.
    snap = world(policies=[policy("office", {"deploymentWindow": OFFICE_HOURS})], jobs=[deployed(V3, at(-30))])
    decision = decide(snap, TARGET, now)
    assert (decision.outcome, decision.reason, decision.eligible_at) == (Outcome.NO_GO, "UpToDate", None)
    assert tags(decision) == ["3.0.0"] and decision.current == V3
    assert only(decision, V3, "deploymentWindow").verdict.status is Status.PENDING  # still explained


def test_a_newer_version_waiting_keeps_a_target_on_a_blocked_current_version_waiting() -> None:
    snap = world(policies=[policy("office", {"deploymentWindow": OFFICE_HOURS})], jobs=[deployed(V2, at(-30))])
    decision = decide(snap, TARGET, at(8))
    assert (decision.outcome, decision.reason, decision.eligible_at) == (Outcome.WAIT, "AwaitingGates", at(24))
    assert decide(snap, TARGET, at(24)).desired == V3


def test_without_an_eta_the_decision_names_the_blocker_it_will_meet_once_the_window_opens() -> None:
    # Regression: outside the window no version is desired yet, so the job checks were not run and
    # "waitingFor" was empty although an active job will hold the target back.
    gated = [policy("office", {"deploymentWindow": OFFICE_HOURS})]
    running = decide(world(policies=gated, jobs=[job(V2, JobStatus.IN_PROGRESS, at(-9))]), TARGET, at(-1))
    assert (running.outcome, running.eligible_at) == (Outcome.WAIT, None)
    assert len(running.waiting_for) == 1 and running.waiting_for[0].startswith("activeJob: job ")
    failed = decide(world(policies=gated, jobs=[job(V3, JobStatus.FAILURE, at(-9), at(-8))]), TARGET, at(-1))
    assert (failed.outcome, failed.eligible_at) == (Outcome.WAIT, None)
    assert failed.waiting_for == ("RetriesExhausted: 1 failed attempt(s); at most 0 retries allowed",)


def test_windows_that_never_overlap_wait_without_an_eta_and_say_so() -> None:
    # Regression: New York office hours and 02:00-04:00 UTC never coincide; the decision waited with
    # no ETA and nothing named.
    nightly = {"rrule": "FREQ=DAILY;BYHOUR=2", "durationMinutes": 120}
    snap = world(policies=[policy("office", {"deploymentWindow": OFFICE_HOURS}),
                           policy("nightly", {"deploymentWindow": nightly})])
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, decision.eligible_at) == (Outcome.WAIT, None)
    [waiting] = decision.waiting_for
    assert waiting.startswith("time: no instant up to ") and waiting.endswith("at which every gate allows at once")


def test_up_to_date_while_a_newer_version_waits_names_what_the_newer_one_waits_for() -> None:
    # Regression: the explanation focused on the current version, whose gates all allow, so a target
    # waiting for an approval of 3.0.0 said it waited for nothing.
    snap = world(policies=[policy("approve", ONE_APPROVAL)], jobs=[deployed(V2, at(-1))],
                 approvals={(V2, PROD): [approved("alice", at(-3))]})
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.WAIT, "AwaitingGates", "2.0.0")
    assert decision.focus is not None and decision.focus.version == V3
    assert decision.waiting_for == ("anyApproval: 0/1 approvals",)
    assert decision.blocking_reasons == ("AwaitingApproval",)


def test_targets_deciding_with_one_shared_engine_decide_as_they_would_alone() -> None:
    snap = world(
        policies=[policy("prod", ONE_APPROVAL, ROLLOUT, {"deploymentWindow": OFFICE_HOURS},
                         selector="environment.name == 'production'"),
                  policy("all", {"versionCooldown": {"intervalSeconds": 600}}, NOT_V3)],
        approvals={(V2, PROD): [approved("alice", at(-1))]},
        jobs=[deployed(V1, at(-2), "t-prod-2"), job(V2, JobStatus.FAILURE, at(-1), at(-0.5), target_id="t-prod-3")],
    )
    for now in (T0, at(1), at(9)):
        engine = Engine(snap, now)
        for target_id in (*PROD_TARGETS, STAGING_TARGET):
            shared = decide(snap, target_id, now, engine=engine)
            assert document(shared) == document(decide(snap, target_id, now)), (target_id, now)


def test_a_veto_lifted_by_a_later_stamped_approval_gives_an_eta() -> None:
    # Regression (the ETA walk stopping early): asked about the past, 3.0.0 is vetoed now but bob's
    # approval stamped two hours later lifts it; 2.0.0 waits for an approval that never comes.
    snap = world(versions=[V2, V3], policies=[policy("approve", ONE_APPROVAL)],
                 approvals={(V3, PROD): [rejected("bob", at(-1)), approved("bob", at(2))]})
    decision = decide(snap, TARGET, T0)
    assert only(decision, V3, "anyApproval").verdict.status is Status.DENIED
    assert (decision.outcome, decision.eligible_at) == (Outcome.WAIT, at(2))
    assert desired_tag(decide(snap, TARGET, at(2))) == "3.0.0"


def test_a_failed_release_waits_while_a_newer_version_may_still_pass() -> None:
    # Regression: 2.0.0 passes its gates but failed here (not retried), 3.0.0 waits for its rollout
    # slot: the decision said no-go although 3.0.0 goes by time alone.
    slow = {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": 3600}}
    last = max(PROD_TARGETS, key=rollout_positions(PROD_TARGETS, V3.id).__getitem__)
    slot = V3.created_at + offset(last)  # no version-level gate: the rollout starts at the version's creation
    snap = world(versions=[V2, V3], policies=[policy("p", slow)],
                 jobs=[job(V2, JobStatus.FAILURE, slot - 2 * HOUR, slot - HOUR, target_id=last)])
    decision = decide(snap, last, slot - 30 * MIN)
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.WAIT, "AwaitingGates", "2.0.0")
    assert "RetriesExhausted" in decision.message
    assert decision.eligible_at == slot
    assert decision.focus is not None and decision.focus.version == V3
    assert decision.blocking_reasons == ("RolloutPosition", "RetriesExhausted")
    assert decide(snap, last, slot).outcome is Outcome.GO


EXPIRING_APPROVAL = {"anyApproval": {"minApprovals": 1, "expiresAfterMinutes": 30}}


def test_a_no_go_whose_desired_versions_approval_lapses_gives_the_eta_of_an_older_version() -> None:
    # Regression (the ETA walk stopping at a no-go): 3.0.0 passes its gates but failed here and is not
    # retried, so it is desired and may not deploy: no-go. Its approval lapses at T0+29min while
    # 2.0.0's holds until T0+30min, so the controller then desires 2.0.0 and creates its job: the ETA
    # is that instant (SPEC §5), not null.
    snap = world(versions=[V2, V3], policies=[policy("approve", EXPIRING_APPROVAL)],
                 jobs=[job(V3, JobStatus.FAILURE, at(-2), at(-1))],
                 approvals={(V3, PROD): [approved("alice", at(minutes=-1))], (V2, PROD): [approved("bob", T0)]})
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, decision.reason, desired_tag(decision)) == (Outcome.NO_GO, "RetriesExhausted", "3.0.0")
    assert only(decision, V3, "anyApproval").verdict.next_check_at == at(minutes=29)
    assert decision.next_evaluation_at == at(minutes=29)
    assert (decision.eligible_at, decision.waiting_for) == (at(minutes=29), ())
    before = decide(snap, TARGET, at(minutes=29) - timedelta(microseconds=1))
    assert (before.outcome, desired_tag(before), before.eligible_at) == (Outcome.NO_GO, "3.0.0", at(minutes=29))
    lapsed = decide(snap, TARGET, at(minutes=29))  # 3.0.0's approval has lapsed; 2.0.0's has not
    assert (lapsed.outcome, lapsed.reason, desired_tag(lapsed)) == (Outcome.GO, "Eligible", "2.0.0")
    assert lapsed.eligible_at == at(minutes=29)


def test_a_no_go_whose_desired_versions_approval_lapses_has_no_eta_when_no_older_version_passes() -> None:
    # The same walk past the no-go, but 2.0.0 has no approval: once 3.0.0's lapses nothing passes, and
    # only an approval (an event) could lead to go.
    snap = world(versions=[V2, V3], policies=[policy("approve", EXPIRING_APPROVAL)],
                 jobs=[job(V3, JobStatus.FAILURE, at(-2), at(-1))],
                 approvals={(V3, PROD): [approved("alice", at(minutes=-1))]})
    decision = decide(snap, TARGET, T0)
    assert (decision.outcome, decision.reason, decision.eligible_at, decision.waiting_for) == (
        Outcome.NO_GO, "RetriesExhausted", None, ())
    lapsed = decide(snap, TARGET, at(minutes=29))
    assert (lapsed.outcome, lapsed.eligible_at, lapsed.waiting_for) == (
        Outcome.WAIT, None, ("anyApproval: 0/1 approvals",))
