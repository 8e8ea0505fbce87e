"""Loads a ``Snapshot``: every fact the decision engine reads, for a set of focus targets.

Focus targets get their full job history; the rest of their deployment's targets only what
environment progression and rollout ordering need (their ids, and their jobs for candidate
versions). Everything is fetched in a handful of set-based queries, whatever the number of targets.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlmodel import Session, col, select

from controller.cel import Doc
from controller.facts import (
    ApprovalFact,
    ApprovalStatus,
    JobFact,
    JobStatus,
    TargetFact,
    VersionFact,
    VersionStatus,
)
from controller.snapshot import OverrideFact, RedeployRequest, Snapshot
from controller.store.documents import deployment_doc, environment_doc, version_doc
from controller.store.policies import load_policies
from controller.store.release_targets import resource_doc_cached
from controller.store.tables import (
    ApprovalRow,
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobAgentRow,
    JobRow,
    OverrideRow,
    ReleaseTargetRow,
    ResourceRow,
)

CHUNK = 2000


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _target(row: Any) -> TargetFact:
    return TargetFact(row.id, row.resource_id, row.environment_id, row.deployment_id)


def _job(row: JobRow) -> JobFact:
    return JobFact(
        id=row.id,
        target_id=row.release_target_id,
        version_id=row.version_id,
        status=JobStatus(row.status),
        attempt=row.attempt,
        created_at=row.created_at,
        completed_at=row.completed_at,
    )


def _version(row: DeploymentVersionRow) -> VersionFact:
    return VersionFact(
        id=row.id,
        deployment_id=row.deployment_id,
        tag=row.tag,
        status=VersionStatus(row.status),
        created_at=row.created_at,
        created_by=row.created_by,
        doc=version_doc(row),
    )


def load_snapshot(session: Session, focus_ids: Sequence[str]) -> Snapshot:
    focus = _rows_by_id(session, ReleaseTargetRow, focus_ids)
    deployment_ids = sorted({t.deployment_id for t in focus})
    resource_ids = sorted({t.resource_id for t in focus})
    deployments = {r.id: r for r in _rows_by_id(session, DeploymentRow, deployment_ids)}
    system_ids = sorted({d.system_id for d in deployments.values()})
    environments = list(session.exec(select(EnvironmentRow).where(col(EnvironmentRow.system_id).in_(system_ids))))

    # Siblings: every target of the focus deployments (progression and rollout read them).
    siblings = list(_select_in(session, ReleaseTargetRow, ReleaseTargetRow.deployment_id, deployment_ids))
    # Upstream: other deployments' targets on the focus resources (deploymentDependency reads them).
    neighbours = [
        t for t in _select_in(session, ReleaseTargetRow, ReleaseTargetRow.resource_id, resource_ids)
        if t.deployment_id not in deployments
    ]
    for row in _rows_by_id(session, DeploymentRow, sorted({t.deployment_id for t in neighbours})):
        deployments[row.id] = row

    versions = [
        _version(v) for v in _select_in(session, DeploymentVersionRow, DeploymentVersionRow.deployment_id, deployment_ids)
    ]
    versions.sort(key=lambda v: (v.created_at, v.id), reverse=True)
    candidate_ids = [v.id for v in versions if v.status is VersionStatus.READY]

    jobs = _jobs(session, [t.id for t in focus], [t.id for t in siblings], candidate_ids, [t.id for t in neighbours])
    version_docs = {v.id: Doc(v.doc) for v in versions}
    version_docs |= _upstream_versions(session, jobs, version_docs)

    by_deployment: dict[str, list[VersionFact]] = defaultdict(list)
    for version in versions:
        by_deployment[version.deployment_id].append(version)
    environment_targets: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in siblings:
        environment_targets[(t.deployment_id, t.environment_id)].append(t.id)
    resource_targets: dict[str, list[str]] = defaultdict(list)
    for t in [*focus, *neighbours]:
        resource_targets[t.resource_id].append(t.id)
    system_environments: dict[str, list[str]] = defaultdict(list)
    for env in sorted(environments, key=lambda e: e.name):
        system_environments[env.system_id].append(env.id)

    return Snapshot(
        policies=load_policies(session),
        targets={t.id: _target(t) for t in [*siblings, *neighbours]},
        resources={r.id: resource_doc_cached(r) for r in _rows_by_id(session, ResourceRow, resource_ids)},
        environments={e.id: Doc(environment_doc(e)) for e in environments},
        deployments={d.id: Doc(deployment_doc(d)) for d in deployments.values()},
        system_environments={k: tuple(v) for k, v in system_environments.items()},
        versions={k: tuple(v) for k, v in by_deployment.items()},
        version_docs=version_docs,
        jobs=jobs,
        approvals=_approvals(session, candidate_ids),
        overrides=_overrides(session, candidate_ids),
        environment_targets={k: tuple(v) for k, v in environment_targets.items()},
        resource_targets={k: tuple(v) for k, v in resource_targets.items()},
        requests={
            t.id: RedeployRequest(t.requested_version_id, t.requested_by or "", t.requested_reason or "", t.requested_at)
            for t in focus
            if t.requested_version_id is not None and t.requested_at is not None
        },
        job_agents={a.id: a.config for a in _rows_by_id(session, JobAgentRow, sorted(
            {d.job_agent_id for d in deployments.values() if d.job_agent_id}))},
    )


def _rows_by_id(session: Session, row_type: type[Any], ids: Sequence[str]) -> list[Any]:
    return list(_select_in(session, row_type, row_type.id, ids))


def _select_in(session: Session, row_type: type[Any], column: Any, values: Sequence[str]) -> Iterable[Any]:
    for chunk in _chunks(list(values)):
        yield from session.exec(select(row_type).where(col(column).in_(chunk)))


def _jobs(
    session: Session, focus: Sequence[str], siblings: Sequence[str], candidates: Sequence[str], neighbours: Sequence[str]
) -> dict[str, tuple[JobFact, ...]]:
    """Full history for focus targets; candidate-version jobs for siblings; successes for neighbours."""
    found: dict[str, JobFact] = {}
    for row in _select_in(session, JobRow, JobRow.release_target_id, focus):
        found[row.id] = _job(row)
    focus_set = set(focus)
    others = [t for t in siblings if t not in focus_set]
    for chunk in _chunks(others):
        for candidate_chunk in _chunks(list(candidates)):
            stmt = select(JobRow).where(col(JobRow.release_target_id).in_(chunk), col(JobRow.version_id).in_(candidate_chunk))
            for row in session.exec(stmt):
                found[row.id] = _job(row)
    for chunk in _chunks(list(neighbours)):
        stmt = select(JobRow).where(col(JobRow.release_target_id).in_(chunk), JobRow.status == JobStatus.SUCCESSFUL.value)
        for row in session.exec(stmt):
            found[row.id] = _job(row)
    per_target: dict[str, list[JobFact]] = defaultdict(list)
    for job in found.values():
        per_target[job.target_id].append(job)
    return {t: tuple(sorted(js, key=lambda j: (j.created_at, j.attempt), reverse=True)) for t, js in per_target.items()}


def _upstream_versions(session: Session, jobs: dict[str, tuple[JobFact, ...]], known: dict[str, Doc]) -> dict[str, Doc]:
    wanted = sorted({j.version_id for js in jobs.values() for j in js} - known.keys())
    return {r.id: Doc(version_doc(r)) for r in _rows_by_id(session, DeploymentVersionRow, wanted)}


def _approvals(session: Session, version_ids: Sequence[str]) -> dict[tuple[str, str], tuple[ApprovalFact, ...]]:
    grouped: dict[tuple[str, str], list[ApprovalFact]] = defaultdict(list)
    for row in _select_in(session, ApprovalRow, ApprovalRow.version_id, version_ids):
        grouped[(row.version_id, row.environment_id)].append(
            ApprovalFact(user=row.user, status=ApprovalStatus(row.status), created_at=row.created_at)
        )
    return {k: tuple(v) for k, v in grouped.items()}


def _overrides(session: Session, version_ids: Sequence[str]) -> tuple[OverrideFact, ...]:
    facts = []
    for row in _select_in(session, OverrideRow, OverrideRow.version_id, version_ids):
        if row.revoked_at is None:
            facts.append(
                OverrideFact(
                    id=row.id,
                    version_id=row.version_id,
                    environment_id=row.environment_id,
                    resource_id=row.resource_id,
                    policy_id=row.policy_id,
                    rule_types=frozenset(row.rule_types) if row.rule_types is not None else None,
                    reason=row.reason,
                    created_by=row.created_by,
                    created_at=row.created_at,
                    expires_at=row.expires_at,
                )
            )
    return tuple(facts)
