"""The decision for one release target at one instant (SPEC §5): pure, explainable, replayable.

1. Candidates: the deployment's ``ready`` versions created no earlier than the current version,
   newest first (no automatic downgrade).
2. Each candidate's version gates are evaluated; overrides turn the gates they name into
   ``allowed`` (``Overridden``). The desired version is the first candidate whose blocking gates all
   allow. ``warn`` rules never block; their failures are warnings.
3. Job eligibility for the desired version: no active job on the target, the ``retry`` rule, and
   the desired version differs from the current one.
4. ``next_evaluation_at`` is the earliest ``next_check_at`` of every verdict computed.
5. ``eligible_at`` is found by re-deciding at successive ``next_evaluation_at`` instants until the
   outcome is ``go``: by construction it equals what the controller will decide then if nothing
   else happens, and is ``None`` once only an event (not time) could lead to ``go``. A no-go may
   have one: a desired version whose job is refused can lapse, and an older one then goes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

from controller.cel import Doc, Projection
from controller.engine import Engine, Subject
from controller.facts import ACTIVE_JOB_STATUSES, TargetFact, VersionFact, VersionStatus
from controller.policy import AppliedRule, Enforcement, Merged, Policy, merge
from controller.rules import deployment_dependency, deployment_window, environment_progression, gradual_rollout, retry
from controller.rules.registry import RULE_TYPES
from controller.rules.verdict import Status, Verdict
from controller.snapshot import OverrideFact, RedeployRequest, Snapshot

MAX_ETA_STEPS = 200


class Outcome(StrEnum):
    GO = "go"
    WAIT = "wait"
    NO_GO = "no-go"


class RuleVerdict(NamedTuple):
    """A tuple, like ``Verdict``: a pass builds several per target."""

    rule_type: str
    verdict: Verdict
    enforcement: Enforcement = Enforcement.BLOCK
    policy: Policy | None = None
    rule_id: str | None = None

    @property
    def fingerprint(self) -> str:
        """What the decision id reads of this verdict, as JSON (encoded once per distinct value)."""
        revision = self.policy.revision if self.policy else None
        return _fingerprint_json(self.rule_id, revision, self.verdict.status, self.verdict.reason)

    @property
    def blocking(self) -> bool:
        return self.enforcement is Enforcement.BLOCK

    def document(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "policyId": self.policy.id if self.policy else None,
            "policyName": self.policy.name if self.policy else None,
            "policyRevision": self.policy.revision if self.policy else None,
            "ruleId": self.rule_id,
            "ruleType": self.rule_type,
            "status": v.status.value,
            "enforcement": self.enforcement.value,
            "reason": v.reason,
            "message": v.message,
            "details": dict(v.details),
            "satisfiedAt": v.satisfied_at,
            "nextCheckAt": v.next_check_at,
        }


@dataclass(frozen=True)
class Candidate:
    version: VersionFact
    verdicts: tuple[RuleVerdict, ...]

    # Derived: the status the blocking verdicts give, the instants they may change at, and what the
    # decision id reads, as JSON (candidates that many targets share work them out once).
    status: Status = field(init=False, compare=False)
    checks: tuple[datetime, ...] = field(init=False, compare=False, repr=False)
    fingerprint: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:  # one loop: candidates that read the target are built per target
        status, checks, fingerprints = Status.ALLOWED, [], []
        for rv in self.verdicts:
            verdict = rv.verdict
            if rv.enforcement is Enforcement.BLOCK and verdict.status is not Status.ALLOWED and (
                    status is Status.ALLOWED or verdict.status is Status.DENIED):
                status = verdict.status
            if verdict.next_check_at is not None:
                checks.append(verdict.next_check_at)
            fingerprints.append(rv.fingerprint)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "checks", tuple(checks))
        object.__setattr__(self, "fingerprint",
                           f"[{encode_basestring_ascii(self.version.id)}, [{', '.join(fingerprints)}]]")


@dataclass(frozen=True)
class Decision:
    target_id: str
    evaluated_at: datetime
    outcome: Outcome
    reason: str
    message: str
    desired: VersionFact | None
    current: VersionFact | None
    candidates: tuple[Candidate, ...]
    job_verdicts: tuple[RuleVerdict, ...]
    policies: tuple[Policy, ...]
    overridden: tuple[AppliedRule, ...]
    next_evaluation_at: datetime | None
    eligible_at: datetime | None = None
    waiting_for: tuple[str, ...] = field(default=())
    decision_id: str = ""

    @property
    def warnings(self) -> tuple[RuleVerdict, ...]:
        return tuple(
            rv
            for c in self.candidates
            for rv in c.verdicts
            if not rv.blocking and rv.verdict.status is not Status.ALLOWED
        )

    @property
    def blocking_reasons(self) -> tuple[str, ...]:
        focus = self.focus
        if focus is None:
            return (self.reason,)
        found = [rv.verdict.reason for rv in focus.verdicts if rv.blocking and rv.verdict.status is not Status.ALLOWED]
        return tuple(found + [rv.verdict.reason for rv in self.job_verdicts if rv.verdict.status is not Status.ALLOWED])

    @property
    def focus(self) -> Candidate | None:
        """The candidate the outcome is about: the desired one, else the first that may still pass.

        Waiting with a desired version that no job check holds back means it is the current one, or
        its job is refused, and a newer version waits: the outcome is about that newer one (its
        blockers are what it waits for).
        """
        desired = next((c for c in self.candidates if self.desired and c.version.id == self.desired.id), None)
        pending = next((c for c in self.candidates if c.status is Status.PENDING), None)
        job_waits = any(rv.verdict.status is Status.PENDING for rv in self.job_verdicts)
        newer_waits = self.outcome is Outcome.WAIT and not job_waits and pending is not None
        if desired is not None and not newer_waits:
            return desired
        return pending or desired or (self.candidates[0] if self.candidates else None)


def decide(snapshot: Snapshot, target_id: str, now: datetime, *, version_id: str | None = None,
           engine: Engine | None = None, explain: bool = True) -> Decision:
    """``engine`` lets many targets of one snapshot share work; ``explain`` adds the ETA."""
    engine = engine if engine is not None and engine.now == now else Engine(snapshot, now)
    if not explain:
        return _decide(engine, target_id, version_id, identify=True)
    decision = _decide(engine, target_id, version_id)
    eligible_at, waiting_for = _eligible_at(engine, decision, version_id)
    return replace(decision, eligible_at=eligible_at, waiting_for=waiting_for, decision_id=decision_id(decision))


def _decide(engine: Engine, target_id: str, version_id: str | None, *, identify: bool = False) -> Decision:
    """``identify`` adds the decision id (the ETA walk's later decisions need none)."""
    snap, now = engine.snapshot, engine.now
    target = snap.targets[target_id]
    plan = _plan(engine, target)
    current_job = snap.current_job(target_id)
    current = snap.version(current_job.version_id, target.deployment_id) if current_job else None
    versions, refusal = _candidates(snap, target, current, version_id)
    candidates: list[Candidate] = []
    desired: VersionFact | None = None
    for version in versions:
        candidate = _evaluate(engine, plan, Subject(target, version), current)
        candidates.append(candidate)
        if candidate.status is Status.ALLOWED:
            desired = version
            break
    request = snap.requests.get(target_id)
    job_verdicts: tuple[RuleVerdict, ...] = ()
    if desired is not None and (request is not None or current is None or desired.id != current.id):
        job_verdicts = _job_eligibility(snap, plan.merged, target, desired, now, request)
    outcome, reason, message = _outcome(refusal, candidates, desired, None if request else current, job_verdicts)
    checks = [t for c in candidates for t in c.checks]
    checks += [rv.verdict.next_check_at for rv in job_verdicts if rv.verdict.next_check_at is not None]
    upcoming = [t for t in checks if t > now]
    examined = tuple(candidates)
    return Decision(
        target_id=target_id,
        evaluated_at=now,
        outcome=outcome,
        reason=reason,
        message=message,
        desired=desired,
        current=current,
        candidates=examined,
        job_verdicts=job_verdicts,
        policies=plan.policies,
        overridden=plan.merged.overridden,
        next_evaluation_at=min(upcoming, default=None),
        decision_id=_identify(target_id, now, outcome, desired, examined, job_verdicts) if identify else "",
    )


@dataclass(frozen=True, eq=False)  # by identity: it keys what engines share about its targets
class _Plan:
    """What the matched policies ask of every candidate of a target."""

    policies: tuple[Policy, ...]
    merged: Merged
    gates: tuple[AppliedRule, ...]  # the version gates (job gates are checked before a job is created)
    starts_rollout: tuple[bool, ...]  # per gate: its satisfiedAt may start a rollout (blocking, version-level)
    rollout: AppliedRule | None
    windows: tuple[deployment_window.DeploymentWindowSpec, ...]  # blocking allow windows: they move a rollout start


def _plan(engine: Engine, target: TargetFact) -> _Plan:
    """Matched and merged once per distinct match, not per target.

    Selectors read the environment, the deployment and some resource values; targets that agree
    on all of them match the same policies (a few dozen plans over thousands of targets)."""
    snap = engine.snapshot
    projection: Projection = engine.fact(("policy-projection",), lambda: policy_projection(snap.policies))
    key = ("plan", target.environment_id, target.deployment_id,
           projection.key({"resource": snap.resources[target.resource_id]}))
    return engine.fact(key, lambda: _make_plan(engine, tuple(matched_policies(engine, target))))


def policy_projection(policies: Iterable[Policy]) -> Projection:
    """What the policies' selectors read of the resource: targets that agree on it, on the
    environment and on the deployment match the same policies."""
    return Projection(path for policy in policies for path in policy.selector.paths if path[0] == "resource")


def _make_plan(engine: Engine, policies: tuple[Policy, ...]) -> _Plan:
    merged: Merged = engine.fact(("merged", *(p.id for p in policies)), lambda: merge(policies))
    windows = tuple(
        a.rule.spec
        for a in merged.gates
        if a.rule.type == "deploymentWindow" and a.rule.enforcement is Enforcement.BLOCK
        and isinstance(a.rule.spec, deployment_window.DeploymentWindowSpec) and a.rule.spec.allow_window
    )
    gates = tuple(a for a in merged.gates if not RULE_TYPES[a.rule.type].job_gate)
    starts_rollout = tuple(
        a.rule.enforcement is Enforcement.BLOCK and RULE_TYPES[a.rule.type].version_level for a in gates
    )
    return _Plan(policies, merged, gates, starts_rollout, merged.singles.get("gradualRollout"), windows)


def matched_policies(engine: Engine, target: TargetFact) -> list[Policy]:
    activation = engine.policy_activation(target)
    return [p for p in engine.snapshot.policies if p.enabled and p.selector.test(activation)]


@dataclass(frozen=True)
class Reads:
    """What deciding some targets reads beyond their own facts. The store loads only this for a
    partial focus (one target's explain or gate call, a batch): nothing else can change the decision."""

    # Of its deployment's targets: those of its own environment when a gradualRollout orders them...
    rollout_environments: frozenset[str] = frozenset()
    # ...and those (with their jobs) of the environments its progression rules depend on.
    dependency_environments: frozenset[str] = frozenset()
    # Other deployments' targets on its resource, with their current versions (deploymentDependency).
    upstream: bool = False

    def __or__(self, other: Reads) -> Reads:
        return Reads(self.rollout_environments | other.rollout_environments,
                     self.dependency_environments | other.dependency_environments, self.upstream or other.upstream)


def reads(
    policies: Iterable[Policy], activation: Mapping[str, Doc], environment_id: str, others: Mapping[str, Doc]
) -> Reads:
    """What deciding the target of ``activation`` (in ``environment_id``) reads, given the policies
    that match it; progression's dependencies are found among the system's environments, ``others``."""
    rollout, upstream = False, False
    dependencies: set[str] = set()
    for policy in policies:
        if policy.enabled and policy.selector.test(activation):
            for spec in (r.spec for r in policy.rules):
                if isinstance(spec, environment_progression.EnvironmentProgressionSpec):
                    dependencies |= {env_id for env_id, env in others.items()
                                     if env_id != environment_id and environment_progression.depends_on(spec, env)}
                rollout = rollout or isinstance(spec, gradual_rollout.GradualRolloutSpec)
                upstream = upstream or isinstance(spec, deployment_dependency.DeploymentDependencySpec)
    return Reads(frozenset({environment_id} if rollout else ()), frozenset(dependencies), upstream)


def _candidates(
    snap: Snapshot, target: TargetFact, current: VersionFact | None, version_id: str | None
) -> tuple[list[VersionFact], tuple[str, str] | None]:
    versions = snap.versions.get(target.deployment_id, ())
    request = snap.requests.get(target.id)
    if request is not None and version_id in (None, request.version_id):
        # An explicit redeploy or rollback: the one exception to "no downgrade"; every gate still applies.
        asked = next((v for v in versions if v.id == request.version_id), None)
        if asked is None:
            return [], ("UnknownVersion", "the requested version no longer exists")
        return [asked], None
    if version_id is not None:
        asked = next((v for v in versions if v.id == version_id), None)
        if asked is None:
            return [], ("UnknownVersion", "the version does not belong to this target's deployment")
        if asked.status is not VersionStatus.READY:
            return [], ("VersionNotReady", f"version {asked.tag} is {asked.status.value}, not ready")
        if current is not None and _older(asked, current):
            return [], ("NoDowngrade", f"version {asked.tag} is older than the current {current.tag}")
        return [asked], None
    ready = [v for v in versions if v.status is VersionStatus.READY and (current is None or not _older(v, current))]
    if not ready:
        return [], ("NoCandidates", "no ready version is as new as the current one")
    return ready, None


def _older(a: VersionFact, b: VersionFact) -> bool:
    return (a.created_at, a.id) < (b.created_at, b.id)


def _evaluate(engine: Engine, plan: _Plan, subject: Subject, current: VersionFact | None) -> Candidate:
    already = current is not None and current.id == subject.version.id
    overrides = _overrides(engine, subject)
    if overrides:  # they name targets: nothing is shared
        verdicts = [_applied_verdict(engine, a, subject, engine.evaluate(a, subject), overrides) for a in plan.gates]
        return _candidate(engine, plan, subject, current, verdicts, overrides)
    shared: _Shared = engine.shared(("shared", plan, subject.version.id), lambda: _share(engine, plan, subject))
    if shared.target_free and (plan.rollout is None or already or shared.start_at is None):
        # Not even the rollout reads the target: it already runs the version, or the rollout has
        # not started (SPEC §4). One candidate serves every such target.
        return engine.shared(
            ("candidate", plan, subject.version.id, already),
            lambda: _candidate(engine, plan, subject, current, list(shared.verdicts), ()),  # type: ignore[arg-type]
        )
    verdicts = [rv or _applied_verdict(engine, a, subject, engine.evaluate(a, subject), ())
                for rv, a in zip(shared.verdicts, plan.gates, strict=True)]
    return _candidate(engine, plan, subject, current, verdicts, ())


def _candidate(
    engine: Engine, plan: _Plan, subject: Subject, current: VersionFact | None, verdicts: list[RuleVerdict],
    overrides: Sequence[OverrideFact],
) -> Candidate:
    """The candidate, given its gates' verdicts: the rollout, which waits for them, comes last."""
    rollout = plan.rollout
    if rollout is not None:
        start_at = _rollout_start(engine, plan, verdicts, subject)
        current_id = current.id if current else None
        already = current_id == subject.version.id

        def applied() -> RuleVerdict:
            verdict = engine.rollout(rollout, subject, start_at, current_id)
            return _applied_verdict(engine, rollout, subject, verdict, overrides)

        # On the version already, or not started: the verdict reads no target (no position), so the
        # plan's targets share it unless an override (which names targets) may apply.
        idle = (already or start_at is None) and not overrides
        verdicts.append(engine.shared(("rollout-idle", plan, already), applied) if idle else applied())
    return Candidate(subject.version, tuple(verdicts))


def _overrides(engine: Engine, subject: Subject) -> tuple[OverrideFact, ...]:
    """The overrides in force that may cover some gate of this (target, version)."""
    target, overrides = subject.target, engine.overrides(subject.version.id)
    if not overrides:
        return ()
    return tuple(
        o for o in overrides
        if o.environment_id in (None, target.environment_id) and o.resource_id in (None, target.resource_id)
    )


@dataclass(frozen=True)
class _Shared:
    """What every target of a plan shares about one version at one instant, when no override applies."""

    verdicts: tuple[RuleVerdict | None, ...]  # per gate; None where the gate reads the target
    target_free: bool  # no gate reads the target
    start_at: datetime | None  # if so, the rollout's start (None: not yet)


def _share(engine: Engine, plan: _Plan, subject: Subject) -> _Shared:
    verdicts = tuple(
        RuleVerdict(a.rule.type, engine.evaluate(a, subject), a.rule.enforcement, a.policy, a.rule.id)
        if engine.target_free(a) else None
        for a in plan.gates
    )
    shared = [rv for rv in verdicts if rv is not None]
    if len(shared) < len(verdicts):
        return _Shared(verdicts, False, None)
    return _Shared(verdicts, True, _rollout_start(engine, plan, shared, subject))


def _applied_verdict(
    engine: Engine, applied: AppliedRule, subject: Subject, verdict: Verdict, overrides: Sequence[OverrideFact]
) -> RuleVerdict:
    override = _override(engine, applied, subject, overrides)
    if override is not None and verdict.status is not Status.ALLOWED:
        verdict = Verdict.allowed(
            "Overridden",
            f"overridden by {override.created_by} until {override.expires_at.isoformat()}: {override.reason}",
            details={"overrideId": override.id, "replaced": {"status": verdict.status.value, "reason": verdict.reason}},
            satisfied_at=override.created_at,
            next_check_at=override.expires_at,
        )
    return RuleVerdict(applied.rule.type, verdict, applied.rule.enforcement, applied.policy, applied.rule.id)


def _override(
    engine: Engine, applied: AppliedRule, subject: Subject, overrides: Sequence[OverrideFact]
) -> OverrideFact | None:
    for override in overrides:
        if override.covers(subject.target, subject.version.id, applied.policy.id, applied.rule.type, engine.now):
            return override
    return None


def _rollout_start(engine: Engine, plan: _Plan, verdicts: Sequence[RuleVerdict], subject: Subject) -> datetime | None:
    """The latest satisfiedAt of the version-level gates, moved into an allow window if one applies."""
    version_level = [rv for rv, starts in zip(verdicts, plan.starts_rollout, strict=True) if starts]
    if any(rv.verdict.status is not Status.ALLOWED for rv in version_level):
        return None
    satisfied = [rv.verdict.satisfied_at for rv in version_level if rv.verdict.satisfied_at is not None]
    start = max(satisfied, default=subject.version.created_at)
    if not plan.windows:
        return start
    return engine.fact(("rollout-start", plan, start), lambda: _into_windows(plan.windows, start))


def _into_windows(windows: Sequence[deployment_window.DeploymentWindowSpec], start: datetime) -> datetime | None:
    for _ in range(MAX_ETA_STEPS):  # move until every allow window contains the start
        moved = [deployment_window.next_opening(w, start) for w in windows]
        if any(m is None for m in moved):
            return None
        latest = max((m for m in moved if m is not None), default=start)
        if latest == start:
            return start
        start = latest
    return None


def _job_eligibility(
    snap: Snapshot, merged: Merged, target: TargetFact, desired: VersionFact, now: datetime,
    request: RedeployRequest | None,
) -> tuple[RuleVerdict, ...]:
    jobs = snap.jobs.get(target.id, ())
    if request is not None:  # a redeploy starts a fresh series of attempts
        jobs = tuple(j for j in jobs if j.created_at >= request.requested_at)
    active = [j for j in jobs if j.status in ACTIVE_JOB_STATUSES]
    verdicts: list[RuleVerdict] = []
    if active:
        job = active[0]
        verdicts.append(RuleVerdict("activeJob", Verdict.pending(
            "JobActive", f"job {job.id} ({job.status.value}) is still running on this target",
            details={"jobId": job.id, "versionId": job.version_id, "status": job.status.value})))
    applied = merged.singles.get("retry")
    spec = applied.rule.spec if applied is not None else retry.DEFAULT_NO_RETRY
    assert isinstance(spec, retry.RetrySpec)
    finished = [j for j in jobs if j.status not in ACTIVE_JOB_STATUSES]
    verdict = retry.evaluate(spec, version_id=desired.id, target_jobs=finished, now=now)
    verdicts.append(RuleVerdict("retry", verdict, Enforcement.BLOCK, applied.policy if applied else None,
                                applied.rule.id if applied else None))
    return tuple(verdicts)


def _outcome(
    refusal: tuple[str, str] | None,
    candidates: Sequence[Candidate],
    desired: VersionFact | None,
    current: VersionFact | None,
    job_verdicts: Sequence[RuleVerdict],
) -> tuple[Outcome, str, str]:
    if refusal is not None:
        return Outcome.NO_GO, *refusal
    if desired is None:
        newer = [c for c in candidates if current is None or c.version.id != current.id]
        if any(c.status is Status.PENDING for c in newer):
            return Outcome.WAIT, "AwaitingGates", "no candidate version passes its gates yet"
        if current is not None and len(newer) < len(candidates):
            # Only the version it already runs may still pass (say, once a window opens): that would
            # change nothing, and nothing newer can pass, so there is nothing to wait for.
            return Outcome.NO_GO, "UpToDate", f"the target already runs {current.tag}; no newer version can pass"
        return Outcome.NO_GO, "AllCandidatesDenied", "every candidate version is denied by a gate"
    if current is not None and desired.id == current.id:
        if len(candidates) > 1 and any(c.status is Status.PENDING for c in candidates):
            return Outcome.WAIT, "AwaitingGates", f"up to date on {current.tag}; a newer version is waiting"
        return Outcome.NO_GO, "UpToDate", f"the target already runs {current.tag}"
    statuses = [rv.verdict.status for rv in job_verdicts]
    if Status.DENIED in statuses:
        blocker = next(rv for rv in job_verdicts if rv.verdict.status is Status.DENIED)
        if any(c.status is Status.PENDING for c in candidates):  # the scan stops at desired: these are newer
            why = f"{desired.tag} may not deploy ({blocker.verdict.reason}); a newer version is waiting"
            return Outcome.WAIT, "AwaitingGates", why
        return Outcome.NO_GO, blocker.verdict.reason, blocker.verdict.message
    if Status.PENDING in statuses:
        blocker = next(rv for rv in job_verdicts if rv.verdict.status is Status.PENDING)
        return Outcome.WAIT, blocker.verdict.reason, blocker.verdict.message
    return Outcome.GO, "Eligible", f"deploy {desired.tag}"


def _eligible_at(
    engine: Engine, decision: Decision, version_id: str | None
) -> tuple[datetime | None, tuple[str, ...]]:
    """The ETA, and what the target waits for that is not time.

    The walk re-decides at each next evaluation until the outcome is ``go``, or until no later instant
    can be ``go`` without an event. A no-go on the way does not end it: a desired version whose job is
    refused (retries exhausted) stops being desired once an allowance of its gates lapses, and an
    older version may then go. Without an ETA, a waiting decision names the blockers of the first
    decision on the way that names any: at ``now`` the only blocker may be a closed window, while an
    active job (or a failed release that is not retried) holds the target back once it opens.
    """
    if decision.outcome is Outcome.GO:
        return decision.evaluated_at, ()
    redeploy = decision.target_id in engine.snapshot.requests
    waiting, later = _waiting_for(decision), decision
    for _ in range(MAX_ETA_STEPS):
        at = later.next_evaluation_at
        if at is None or _held_by_event(engine, later, redeploy=redeploy, asked=version_id is not None):
            break
        later = _decide(engine.at(at), decision.target_id, version_id)
        if later.outcome is Outcome.GO:
            # An ETA means every remaining blocker is time-based (SPEC §5): nothing else is waited
            # for, even a rollout whose start awaits a soak and so carries no nextCheckAt itself.
            return at, ()
        refused = (f"{later.reason}: {later.message}",) if later.outcome is Outcome.NO_GO else ()
        waiting = waiting or _waiting_for(later) or refused
    else:
        # Every blocker is time-based, yet they never all allow at once (say, allow windows that do
        # not overlap): say so rather than wait with nothing named.
        waiting = waiting or (f"time: no instant up to {later.evaluated_at.isoformat()} at which every gate "
                              "allows at once",)
    return None, waiting if decision.outcome is Outcome.WAIT else ()


def _has_fallback(engine: Engine, decision: Decision) -> bool:
    """Some ready version lies between the current one and the desired one: should the desired
    version's allowance lapse while its job is refused, that one may go instead."""
    desired, current = decision.desired, decision.current
    if desired is None:
        return False
    versions = engine.snapshot.versions.get(engine.snapshot.targets[decision.target_id].deployment_id, ())
    return any(
        v.status is VersionStatus.READY and _older(v, desired) and (current is None or _older(current, v))
        for v in versions
    )


def _held_by_event(engine: Engine, decision: Decision, *, redeploy: bool, asked: bool) -> bool:
    """No later instant can be ``go`` without an event (an approval, an upstream success, a job ending).

    Go needs a desired version other than the current one (unless redeploying) whose job may be
    created: an examined candidate that no event blocker holds back, or an older one, not examined
    (there is none when one version was ``asked`` about or for a redeploy), once an allowance of the
    desired version lapses. Denied verdicts count: a veto that a later-stamped approval replaces (a
    decision asked about the past) carries a nextCheckAt.
    """
    if any(_event_blocker(rv) for rv in decision.job_verdicts):  # an active job holds every version back
        return True
    current = None if redeploy else decision.current
    for c in decision.candidates:
        if current is not None and c.version.id == current.id:
            continue  # going back to it changes nothing
        desired = decision.desired is not None and c.version.id == decision.desired.id
        verdicts = c.verdicts + decision.job_verdicts if desired else c.verdicts
        if not any(_event_blocker(rv, denied=True) for rv in verdicts):
            return False
        lapses = desired and any(rv.blocking and rv.verdict.next_check_at is not None for rv in c.verdicts)
        if lapses and not (asked or redeploy) and _has_fallback(engine, decision):
            return False
    return True


def _event_blocker(rv: RuleVerdict, *, denied: bool = False) -> bool:
    """Holds until an event. A rollout awaiting its gates carries no nextCheckAt of its own but follows
    the gates it waits on, so it is not such a blocker."""
    held = (Status.PENDING, Status.DENIED) if denied else (Status.PENDING,)
    return (
        rv.blocking
        and rv.verdict.status in held
        and rv.verdict.next_check_at is None
        and not (rv.rule_type == "gradualRollout" and rv.verdict.reason == "AwaitingGates")
    )


def _waiting_for(decision: Decision) -> tuple[str, ...]:
    """What a pending decision waits on that is not time: approvals, upstream successes, jobs."""
    if decision.outcome is not Outcome.WAIT:
        return ()
    focus = decision.focus
    verdicts = list(focus.verdicts) if focus else []
    verdicts += decision.job_verdicts
    return tuple(
        f"{rv.rule_type}: {rv.verdict.message}"
        for rv in verdicts
        if rv.blocking and rv.verdict.status is Status.PENDING and rv.verdict.next_check_at is None
    )


def decision_id(decision: Decision) -> str:
    """Deterministic: the same facts at the same instant give the same id (replayable, like OPA's)."""
    return _identify(decision.target_id, decision.evaluated_at, decision.outcome, decision.desired,
                     decision.candidates, decision.job_verdicts)


def _identify(
    target_id: str, at: datetime, outcome: Outcome, desired: VersionFact | None,
    candidates: Sequence[Candidate], job_verdicts: Sequence[RuleVerdict],
) -> str:
    """The sha256 of ``json.dumps({"at", "desired", "job", "outcome", "target", "verdicts"},
    sort_keys=True)``, written out piece by piece: the candidates and verdicts, which repeat across
    targets, are encoded once (their ``fingerprint``), the strings as ``json.dumps`` encodes them."""
    verdicts = ", ".join([c.fingerprint for c in candidates])
    body = (
        f'{{"at": {_instant_json(at)}, '
        f'"desired": {encode_basestring_ascii(desired.id) if desired else "null"}, '
        f'"job": [{", ".join([rv.fingerprint for rv in job_verdicts])}], '
        f'"outcome": {encode_basestring_ascii(outcome.value)}, '
        f'"target": {encode_basestring_ascii(target_id)}, '
        f'"verdicts": [{verdicts}]}}'
    )
    return _uuid5_text(hashlib.sha256(body.encode()).digest())


def _uuid5_text(digest: bytes) -> str:
    """``str(uuid.UUID(bytes=digest[:16], version=5))`` without building the UUID: the version and
    variant bits set in place, the hex grouped 8-4-4-4-12 (this runs once per target and pass)."""
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@lru_cache(maxsize=64)
def _instant_json(at: datetime) -> str:
    return encode_basestring_ascii(at.isoformat())


@lru_cache(maxsize=4096)
def _fingerprint_json(rule_id: str | None, revision: int | None, status: str, reason: str) -> str:
    return json.dumps([rule_id, revision, status, reason])


def policy_revisions(policies: Iterable[Policy]) -> dict[str, int]:
    return {p.id: p.revision for p in policies}


def _version_ref(version: VersionFact | None) -> dict[str, str] | None:
    return {"id": version.id, "tag": version.tag} if version is not None else None


def document(decision: Decision) -> dict[str, Any]:
    """The explanation clients see and the decision log stores (SPEC §5, §10)."""
    return {
        "decisionId": decision.decision_id,
        "releaseTargetId": decision.target_id,
        "evaluatedAt": decision.evaluated_at,
        "outcome": decision.outcome.value,
        "reason": decision.reason,
        "message": decision.message,
        "desiredVersion": _version_ref(decision.desired),
        "currentVersion": _version_ref(decision.current),
        "eligibleAt": decision.eligible_at,
        "waitingFor": list(decision.waiting_for),
        "nextEvaluationAt": decision.next_evaluation_at,
        "warnings": [rv.document() for rv in decision.warnings],
        "candidates": [
            {
                "version": _version_ref(c.version),
                "outcome": c.status.value,
                "verdicts": [rv.document() for rv in c.verdicts],
            }
            for c in decision.candidates
        ],
        "jobEligibility": [rv.document() for rv in decision.job_verdicts],
        "policies": [
            {"id": p.id, "name": p.name, "revision": p.revision, "priority": p.priority} for p in decision.policies
        ],
        "overriddenRules": [
            {"policyId": a.policy.id, "policyName": a.policy.name, "ruleId": a.rule.id, "ruleType": a.rule.type}
            for a in decision.overridden
        ],
    }
