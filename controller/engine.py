"""Rule dispatch: turns (applied rule, target, candidate version, now) into a verdict.

One ``Engine`` serves one snapshot at one instant and shares work between targets: verdicts that
depend only on the (version, environment) — approvals, environment progression — or only on time —
deployment windows — are computed once and reused for every target they apply to; one dependency
environment's progress is measured once for every environment that depends on it; rollout orders
are computed once per (version, environment). Evaluators stay pure; a bug in one fails
closed as a ``denied`` verdict instead of taking the pass down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from controller.cel import Doc, compile_expression
from controller.facts import JobFact, TargetFact, VersionFact
from controller.policy import AppliedRule
from controller.rules import (
    any_approval,
    condition,
    deployment_dependency,
    deployment_window,
    environment_progression,
    gradual_rollout,
    version_cooldown,
    version_selector,
)
from controller.rules.deployment_dependency import UpstreamFact
from controller.rules.environment_progression import DependencyEnvironment, EnvironmentProgressionSpec, Progress
from controller.rules.verdict import Verdict
from controller.snapshot import OverrideFact, Snapshot

log = logging.getLogger(__name__)
R = TypeVar("R")

# Rule types whose verdict depends only on the (version, environment) or on time, never on the target.
_TARGET_FREE = frozenset({"anyApproval", "environmentProgression", "deploymentWindow"})


@dataclass(frozen=True)
class Subject:
    """One (target, candidate version) under evaluation."""

    target: TargetFact
    version: VersionFact

    @property
    def scope(self) -> tuple[str, str]:
        return (self.version.id, self.target.environment_id)


class _JobsOfVersion(Mapping[str, tuple[JobFact, ...]]):
    """An environment's targets -> their jobs for one version, filtered as they are read.

    Progression reads each dependency environment once per rule and version (the engine shares the
    result), so filtering on read is cheaper than keeping a filtered copy of every target's jobs."""

    def __init__(self, jobs: Mapping[str, tuple[JobFact, ...]], target_ids: tuple[str, ...], version_id: str) -> None:
        self._jobs = jobs
        self._target_ids = target_ids
        self._targets = frozenset(target_ids)
        self._version_id = version_id

    def __getitem__(self, target_id: str) -> tuple[JobFact, ...]:
        if target_id not in self._targets:
            raise KeyError(target_id)
        return tuple(j for j in self._jobs.get(target_id, ()) if j.version_id == self._version_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._target_ids)

    def __len__(self) -> int:
        return len(self._target_ids)


class Engine:
    def __init__(self, snapshot: Snapshot, now: datetime, *, facts: dict[Hashable, Any] | None = None) -> None:
        self.snapshot = snapshot
        self.now = now
        self._shared: dict[Hashable, Any] = {}
        # Derived facts that do not depend on ``now`` (dependency environments, rollout orders): an
        # engine for a later instant over the same snapshot may reuse them (``at``).
        self.facts: dict[Hashable, Any] = {} if facts is None else facts

    def at(self, now: datetime) -> Engine:
        """An engine for another instant over the same snapshot, sharing its time-free facts."""
        return Engine(self.snapshot, now, facts=self.facts)

    def shared(self, key: Hashable, compute: Callable[[], R]) -> R:
        """Per-instant sharing: verdicts that depend only on (version, environment) or on time."""
        try:
            found: R = self._shared[key]
        except KeyError:
            found = self._shared[key] = compute()
        return found

    def fact(self, key: Hashable, compute: Callable[[], R]) -> R:
        try:
            found: R = self.facts[key]
        except KeyError:
            found = self.facts[key] = compute()
        return found

    def target_free(self, applied: AppliedRule) -> bool:
        """Whether the rule's verdict is the same for every target of one (deployment, environment)
        at one version and instant, so that one evaluation may serve them all. A CEL rule is, when
        its expression reads nothing of the resource."""
        spec = applied.rule.spec
        if isinstance(spec, version_selector.VersionSelectorSpec):
            return "resource" not in compile_expression(spec.selector, version_selector.VARIABLES).variables
        if isinstance(spec, condition.ConditionSpec):
            return "resource" not in compile_expression(spec.expression, condition.VARIABLES).variables
        return applied.rule.type in _TARGET_FREE

    def evaluate(self, applied: AppliedRule, subject: Subject) -> Verdict:
        try:
            return self._dispatch(applied, subject)
        except Exception as exc:  # an evaluator bug must fail closed, not crash the pass
            log.exception("rule evaluation failed", extra={"rule": applied.rule.id, "type": applied.rule.type})
            return Verdict.denied("EvaluationError", f"{type(exc).__name__}: {exc}")

    def _dispatch(self, applied: AppliedRule, subject: Subject) -> Verdict:
        rule, spec, now = applied.rule, applied.rule.spec, self.now
        target, version = subject.target, subject.version
        match rule.type:
            case "anyApproval":
                assert isinstance(spec, any_approval.AnyApprovalSpec)
                approvals = self.snapshot.approvals.get(subject.scope, ())
                return self.shared(
                    ("verdict", rule.id, applied.policy.id, *subject.scope),
                    lambda: any_approval.evaluate(
                        spec, approvals=approvals, version_created_by=version.created_by, now=now
                    ),
                )
            case "environmentProgression":
                assert isinstance(spec, environment_progression.EnvironmentProgressionSpec)
                return self.shared(
                    ("verdict", rule.id, applied.policy.id, *subject.scope),
                    lambda: environment_progression.evaluate(
                        spec, environments=self.dependencies(subject), now=now, measure=self._measure(applied, version)
                    ),
                )
            case "deploymentWindow":
                assert isinstance(spec, deployment_window.DeploymentWindowSpec)
                return self.shared(("verdict", rule.id, applied.policy.id),
                                   lambda: deployment_window.evaluate(spec, now=now))
            case "versionCooldown":
                assert isinstance(spec, version_cooldown.VersionCooldownSpec)
                jobs = self.snapshot.jobs.get(target.id, ())
                return version_cooldown.evaluate(spec, candidate_version_id=version.id, target_jobs=jobs, now=now)
            case "versionSelector":
                assert isinstance(spec, version_selector.VersionSelectorSpec)
                return version_selector.evaluate(spec, activation=self.activation(subject), now=now)
            case "condition":
                assert isinstance(spec, condition.ConditionSpec)
                return condition.evaluate(spec, activation=self.activation(subject), now=now)
            case "deploymentDependency":
                assert isinstance(spec, deployment_dependency.DeploymentDependencySpec)
                # Reads the other deployments' targets on the resource, not the candidate: shared by a
                # target's candidates (and by any target of this deployment on the same resource).
                return self.shared(
                    ("verdict", rule.id, applied.policy.id, target.resource_id, target.deployment_id),
                    lambda: deployment_dependency.evaluate(spec, upstream=self.upstream(target), now=now),
                )
        raise ValueError(f"rule type {rule.type!r} is not a version gate")

    def activation(self, subject: Subject) -> dict[str, Doc]:
        snap, target = self.snapshot, subject.target
        return {
            "environment": snap.environments[target.environment_id],
            "resource": snap.resources[target.resource_id],
            "deployment": snap.deployments[target.deployment_id],
            "version": snap.version_docs[subject.version.id],
        }

    def policy_activation(self, target: TargetFact) -> dict[str, Doc]:
        snap = self.snapshot
        return {
            "environment": snap.environments[target.environment_id],
            "resource": snap.resources[target.resource_id],
            "deployment": snap.deployments[target.deployment_id],
        }

    def dependencies(self, subject: Subject) -> list[DependencyEnvironment]:
        """Every other environment of the system, with this deployment's jobs for the version there."""
        target, version = subject.target, subject.version
        system_id = self.snapshot.deployments[target.deployment_id].data["systemId"]
        environments = self.fact(("dependencies", target.deployment_id, version.id), lambda: self._dependencies(
            system_id, target.deployment_id, version.id))
        return [env for env_id, env in environments if env_id != target.environment_id]

    def _dependencies(
        self, system_id: str, deployment_id: str, version_id: str
    ) -> list[tuple[str, DependencyEnvironment]]:
        snap = self.snapshot
        result = []
        for env_id in snap.system_environments.get(system_id, ()):
            target_ids = snap.environment_targets.get((deployment_id, env_id), ())
            jobs = _JobsOfVersion(snap.jobs, target_ids, version_id)
            result.append((env_id, DependencyEnvironment(environment=snap.environments[env_id], target_jobs=jobs)))
        return result

    def _measure(self, applied: AppliedRule, version: VersionFact) -> environment_progression.Measure:
        """``progress`` shared by every environment that depends on the same one at this instant,
        over success times shared by every instant (an ETA walk decides at dozens).

        Keyed by the dependency environment's identity: those objects live in ``facts``, one per
        (deployment, version, environment), for as long as this engine and its siblings do."""
        def measure(spec: EnvironmentProgressionSpec, env: DependencyEnvironment, now: datetime) -> Progress:
            times = self.fact(
                ("success-times", id(env), spec.success_statuses, spec.require_verification_passed),
                lambda: environment_progression.success_times(spec, env),
            )
            key = ("progress", applied.policy.id, applied.rule.id, version.id, id(env))
            return self.shared(key, lambda: environment_progression.progress(spec, env, now, times))
        return measure

    def overrides(self, version_id: str) -> tuple[OverrideFact, ...]:
        """The version's overrides in force at this instant: most versions have none to check."""
        now = self.now
        return self.shared(("overrides", version_id), lambda: tuple(
            o for o in self.snapshot.overrides if o.version_id == version_id and o.created_at <= now < o.expires_at))

    def upstream(self, target: TargetFact) -> list[UpstreamFact]:
        snap = self.snapshot
        facts = []
        for other_id in snap.resource_targets.get(target.resource_id, ()):
            other = snap.targets.get(other_id)
            if other is None or other.deployment_id == target.deployment_id:
                continue
            job = snap.current_job(other_id)
            version_doc = snap.version_docs.get(job.version_id) if job is not None else None
            facts.append(
                UpstreamFact(
                    deployment=snap.deployments[other.deployment_id],
                    version=version_doc,
                    deployed_at=job.completed_at if job is not None else None,
                )
            )
        return facts

    def rollout(
        self, applied: AppliedRule, subject: Subject, start_at: datetime | None, current_version_id: str | None
    ) -> Verdict:
        spec = applied.rule.spec
        assert isinstance(spec, gradual_rollout.GradualRolloutSpec)
        target, version = subject.target, subject.version
        env_targets = self.snapshot.environment_targets.get((target.deployment_id, target.environment_id), (target.id,))
        already = current_version_id == version.id
        # The order matters only once the rollout started, to a target not on the version yet.
        positions = None if already or start_at is None else self.fact(
            ("positions", version.id, target.deployment_id, target.environment_id),
            lambda: gradual_rollout.rollout_positions(env_targets, version.id),
        )
        try:
            return gradual_rollout.evaluate(
                spec,
                target_id=target.id,
                version_id=version.id,
                environment_target_ids=env_targets,
                positions=positions,
                start_at=start_at,
                already_on_version=already,
                now=self.now,
            )
        except Exception as exc:
            log.exception("rollout evaluation failed")
            return Verdict.denied("EvaluationError", f"{type(exc).__name__}: {exc}")
