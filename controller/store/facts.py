"""Loads a ``Snapshot``: every fact the decision engine reads, for a set of focus targets.

Focus targets get their full job history; the rest of their deployment's targets only what
environment progression and rollout ordering need (their ids, and their jobs for the versions the
focus targets may still move to). Everything is fetched in a handful of set-based queries, whatever
the number of targets.

Bulk rows (targets, jobs, resource revisions) are read as column tuples, not ORM objects: building
an ORM object costs several times what the decision then does with the row. Their timestamps are
read through the dialect's own (C) processor and made UTC here, exactly as ``UTCDateTime`` would,
without its per-value Python hook. Must not: decide anything; it only reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, type_coerce
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
from controller.snapshot import OverrideFact, RedeployRequest, Snapshot, current_job
from controller.store.doc_cache import cached, cached_doc
from controller.store.documents import deployment_doc, environment_doc, resource_doc, version_doc
from controller.store.policies import load_policies
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
_STATUSES = {status.value: status for status in JobStatus}
T, J = ReleaseTargetRow, JobRow


def _instant(column: Any) -> Any:
    """A timestamp column read raw: text on SQLite, an aware datetime from PostgreSQL's driver."""
    return type_coerce(column, String)


_TARGET_COLUMNS = (T.id, T.resource_id, T.environment_id, T.deployment_id)
_FOCUS_COLUMNS = (*_TARGET_COLUMNS, T.requested_version_id, T.requested_by, T.requested_reason,
                  _instant(T.requested_at))
_JOB_COLUMNS = (J.id, J.release_target_id, J.version_id, J.status, J.attempt, _instant(J.created_at),
                _instant(J.completed_at))


def _utc(value: str | datetime | None) -> datetime | None:
    """What ``UTCDateTime`` returns, at a fraction of its cost per value. SQLite stores UTC as ISO
    text without an offset (``UTCDateTime`` binds UTC); drivers with time zones give datetimes."""
    if value is None:
        return None
    if type(value) is str:
        return datetime.fromisoformat(value + "+00:00")
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


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


@dataclass(frozen=True)
class _Scope:
    """Which targets the snapshot covers: the focus, its deployments' targets, and its neighbours."""

    focus: list[Any]  # rows of _FOCUS_COLUMNS
    siblings: list[TargetFact]  # every target of the focus deployments
    neighbours: list[TargetFact]  # other deployments' targets on the focus resources


def load_snapshot(session: Session, focus_ids: Sequence[str]) -> Snapshot:
    scope = _scope(session, focus_ids)
    deployment_ids = sorted({t.deployment_id for t in scope.focus})
    deployments = {r.id: r for r in _rows_by_id(session, DeploymentRow, deployment_ids)}
    system_ids = sorted({d.system_id for d in deployments.values()})
    environments = list(session.exec(select(EnvironmentRow).where(col(EnvironmentRow.system_id).in_(system_ids))))
    for row in _rows_by_id(session, DeploymentRow, sorted({t.deployment_id for t in scope.neighbours})):
        deployments[row.id] = row

    versions = [_version(v) for v in _select_in(session, DeploymentVersionRow, DeploymentVersionRow.deployment_id,
                                                deployment_ids)]
    versions.sort(key=lambda v: (v.created_at, v.id), reverse=True)
    by_deployment: dict[str, list[VersionFact]] = defaultdict(list)
    for version in versions:
        by_deployment[version.deployment_id].append(version)

    focus_ids = [t[0] for t in scope.focus]
    jobs = _jobs_per_target(_job_rows(session, focus_ids))  # full history
    candidate_ids = _candidate_ids(scope.focus, jobs, by_deployment)
    others: list[Any] = []
    if len(focus_ids) < len(scope.siblings):
        focus_set = set(focus_ids)
        others += [r for r in _sibling_job_rows(session, deployment_ids, candidate_ids) if r[1] not in focus_set]
    for chunk in _chunks([t.id for t in scope.neighbours]):  # their current versions
        others += session.execute(select(*_JOB_COLUMNS).where(
            col(J.release_target_id).in_(chunk), J.status == JobStatus.SUCCESSFUL.value)).all()
    jobs |= _jobs_per_target(others)  # siblings' and neighbours' targets are not focus targets

    version_docs = {v.id: Doc(v.doc) for v in versions}
    version_docs |= _upstream_versions(session, jobs, version_docs)
    environment_targets: dict[tuple[str, str], list[str]] = defaultdict(list)
    for t in scope.siblings:
        environment_targets[(t.deployment_id, t.environment_id)].append(t.id)
    resource_targets: dict[str, list[str]] = defaultdict(list)
    for t in [*(TargetFact(*row[:4]) for row in scope.focus), *scope.neighbours]:
        resource_targets[t.resource_id].append(t.id)
    system_environments: dict[str, list[str]] = defaultdict(list)
    for env in sorted(environments, key=lambda e: e.name):
        system_environments[env.system_id].append(env.id)

    return Snapshot(
        policies=load_policies(session),
        targets={t.id: t for t in [*scope.siblings, *scope.neighbours]},
        resources=_resources(session, sorted({t[1] for t in scope.focus})),
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
            t[0]: RedeployRequest(t[4], t[5] or "", t[6] or "", _utc(t[7]))  # type: ignore[arg-type]
            for t in scope.focus
            if t[4] is not None and t[7] is not None
        },
        job_agents={a.id: a.config for a in _rows_by_id(session, JobAgentRow, sorted(
            {d.job_agent_id for d in deployments.values() if d.job_agent_id}))},
    )


def _scope(session: Session, focus_ids: Sequence[str]) -> _Scope:
    focus = []
    for chunk in _chunks(list(focus_ids)):
        focus += session.execute(select(*_FOCUS_COLUMNS).where(col(T.id).in_(chunk))).all()
    deployment_ids = sorted({t[3] for t in focus})
    siblings = [TargetFact(*row) for row in session.execute(
        select(*_TARGET_COLUMNS).where(col(T.deployment_id).in_(deployment_ids)))]
    # Upstream: other deployments' targets on the focus resources (deploymentDependency reads them).
    neighbours = []
    for chunk in _chunks(sorted({t[1] for t in focus})):
        neighbours += [TargetFact(*row) for row in session.execute(select(*_TARGET_COLUMNS).where(
            col(T.resource_id).in_(chunk), col(T.deployment_id).not_in(deployment_ids)))]
    return _Scope(focus, siblings, neighbours)


def _candidate_ids(
    focus: Sequence[Any], jobs: dict[str, tuple[JobFact, ...]], versions: dict[str, list[VersionFact]]
) -> list[str]:
    """The versions a focus target may be decided on: ready ones no older than the oldest current
    version among the focus targets of their deployment (there is no automatic downgrade), and any
    version an operator asked to redeploy. Other targets' jobs and approvals matter only for these."""
    by_id = {v.id: v for vs in versions.values() for v in vs}
    floors: dict[str, list[tuple[datetime, str] | None]] = defaultdict(list)
    for target in focus:
        job = current_job(jobs.get(target[0], ()))
        current = by_id.get(job.version_id) if job is not None else None
        in_deployment = current is not None and current.deployment_id == target[3]
        floors[target[3]].append((current.created_at, current.id) if in_deployment else None)  # type: ignore[union-attr]
    wanted = {t[4] for t in focus if t[4] is not None}
    for deployment_id, found in floors.items():
        floor = None if None in found else min(f for f in found if f is not None)
        wanted |= {
            v.id for v in versions.get(deployment_id, ())
            if v.status is VersionStatus.READY and (floor is None or (v.created_at, v.id) >= floor)
        }
    return sorted(wanted)


def _sibling_job_rows(session: Session, deployment_ids: Sequence[str], version_ids: Sequence[str]) -> list[Any]:
    """The candidate versions' jobs on every target of the focus deployments."""
    targets = select(T.id).where(col(T.deployment_id).in_(deployment_ids))
    rows: list[Any] = []
    for chunk in _chunks(list(version_ids)):
        rows += session.execute(select(*_JOB_COLUMNS).where(
            col(J.version_id).in_(chunk), col(J.release_target_id).in_(targets.scalar_subquery()))).all()
    return rows


def _job_rows(session: Session, target_ids: Sequence[str]) -> list[Any]:
    rows: list[Any] = []
    for chunk in _chunks(list(target_ids)):
        rows += session.execute(select(*_JOB_COLUMNS).where(col(J.release_target_id).in_(chunk))).all()
    return rows


def _facts(rows: Iterable[Any]) -> Iterator[JobFact]:
    statuses = _STATUSES
    for job_id, target_id, version_id, status, attempt, created_at, completed_at in rows:
        yield JobFact(job_id, target_id, version_id, statuses[status], attempt, _utc(created_at),  # type: ignore[arg-type]
                      _utc(completed_at))


def _jobs_per_target(rows: Iterable[Any]) -> dict[str, tuple[JobFact, ...]]:
    per_target: dict[str, list[JobFact]] = defaultdict(list)
    for job in _facts(rows):
        per_target[job.target_id].append(job)
    return {t: tuple(sorted(js, key=lambda j: (j.created_at, j.attempt), reverse=True)) for t, js in per_target.items()}


def _resources(session: Session, resource_ids: Sequence[str]) -> dict[str, Doc]:
    """Resource documents from the per-revision cache; only changed resources are read whole."""
    revisions: list[Any] = []
    for chunk in _chunks(resource_ids):
        revisions += session.execute(select(ResourceRow.id, ResourceRow.revision).where(
            col(ResourceRow.id).in_(chunk))).all()
    docs = {rid: cached(rid, revision) for rid, revision in revisions}
    missing = [rid for rid, doc in docs.items() if doc is None]
    for row in _rows_by_id(session, ResourceRow, missing):
        docs[row.id] = cached_doc(row.id, row.revision, resource_doc(row))
    return docs  # type: ignore[return-value]


def _rows_by_id(session: Session, row_type: type[Any], ids: Sequence[str]) -> list[Any]:
    return list(_select_in(session, row_type, row_type.id, ids))


def _select_in(session: Session, row_type: type[Any], column: Any, values: Sequence[str]) -> Iterable[Any]:
    for chunk in _chunks(list(values)):
        yield from session.exec(select(row_type).where(col(column).in_(chunk)))


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
