"""Everything a decision reads, loaded up front: the pure engine's whole world.

The store fills a ``Snapshot`` for a set of targets in a few bulk queries; ``decide`` then reads only
this object and ``now``. Keeping the facts in one immutable value is what makes a decision
replayable and lets the explain endpoint ask "what if it were later?".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from controller.cel import Doc
from controller.facts import ApprovalFact, JobFact, JobStatus, TargetFact, VersionFact
from controller.policy import Policy


@dataclass(frozen=True)
class OverrideFact:
    id: str
    version_id: str
    environment_id: str | None
    resource_id: str | None
    policy_id: str | None
    rule_types: frozenset[str] | None
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime

    def covers(self, target: TargetFact, version_id: str, policy_id: str, rule_type: str, now: datetime) -> bool:
        return (
            self.version_id == version_id
            and self.created_at <= now < self.expires_at
            and self.environment_id in (None, target.environment_id)
            and self.resource_id in (None, target.resource_id)
            and self.policy_id in (None, policy_id)
            and (self.rule_types is None or rule_type in self.rule_types)
        )


@dataclass(frozen=True)
class RedeployRequest:
    """An operator's explicit redeploy (of the current version) or rollback (to an earlier one)."""

    version_id: str
    requested_by: str
    reason: str
    requested_at: datetime


@dataclass(frozen=True)
class Snapshot:
    policies: tuple[Policy, ...]
    targets: Mapping[str, TargetFact]
    resources: Mapping[str, Doc]
    environments: Mapping[str, Doc]
    deployments: Mapping[str, Doc]
    # Environment ids per system, for progression's "other environments of the same system".
    system_environments: Mapping[str, tuple[str, ...]]
    # Per deployment, newest first (createdAt descending, then id descending).
    versions: Mapping[str, tuple[VersionFact, ...]]
    version_docs: Mapping[str, Doc]
    # Per target, newest first (createdAt descending).
    jobs: Mapping[str, tuple[JobFact, ...]]
    approvals: Mapping[tuple[str, str], tuple[ApprovalFact, ...]]
    overrides: tuple[OverrideFact, ...]
    # (deployment id, environment id) -> that deployment's targets in that environment.
    environment_targets: Mapping[tuple[str, str], tuple[str, ...]]
    # resource id -> every target on it (any deployment), for deploymentDependency.
    resource_targets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    requests: Mapping[str, RedeployRequest] = field(default_factory=dict)
    # job agent id -> its config, the base of every job's merged config.
    job_agents: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    # Derived on first read: the current job per target (the decision and the load both ask).
    _current: dict[str, JobFact | None] = field(default_factory=dict, init=False, compare=False, repr=False)

    def remember_current(self, currents: Mapping[str, JobFact | None]) -> None:
        """Current jobs the loader already worked out from these very ``jobs``."""
        self._current.update(currents)

    def current_job(self, target_id: str) -> JobFact | None:
        """The latest successful job by completion: it defines the target's current version."""
        try:
            return self._current[target_id]
        except KeyError:
            found = self._current[target_id] = current_job(self.jobs.get(target_id, ()))
            return found

    def version(self, version_id: str, deployment_id: str) -> VersionFact | None:
        for version in self.versions.get(deployment_id, ()):
            if version.id == version_id:
                return version
        return None


def current_job(jobs: Iterable[JobFact]) -> JobFact | None:
    """Of one target's jobs, the latest successful one by completion (the store reads it too)."""
    best: JobFact | None = None
    for job in jobs:
        if job.status is not JobStatus.SUCCESSFUL or job.completed_at is None:
            continue
        if best is None or (job.completed_at, job.created_at) > (best.completed_at, best.created_at):
            best = job
    return best
