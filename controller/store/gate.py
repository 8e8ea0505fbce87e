"""Go/no-go for agents that deploy on their own, and explicit redeploys/rollbacks (SPEC §6).

Both first bump the target's ``lock_seq``: a row lock on PostgreSQL and the write lock on SQLite.
Two concurrent gate calls for one target are therefore serialised, and the second sees the first's
``inProgress`` job: it can never also get ``go``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from controller.decision import Decision, Outcome, decide
from controller.errors import Invalid, NotFound
from controller.facts import JobStatus
from controller.ids import looks_like_id
from controller.reconcile import merged_config
from controller.store import triggers
from controller.store.documents import job_doc
from controller.store.facts import load_snapshot
from controller.store.inventory import Context
from controller.store.jobs import new_job
from controller.store.repo import audit
from controller.store.tables import (
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobAgentRow,
    JobRow,
    ReleaseTargetRow,
    ResourceRow,
)


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    job: JobRow | None


def _one(session: Session, row_type: type[Any], field: str, key: str, loc: str, *where: Any) -> Any:
    if looks_like_id(key):
        row = session.exec(select(row_type).where(row_type.id == key, *where)).first()
        if row is not None:
            return row
    rows = list(session.exec(select(row_type).where(getattr(row_type, field) == key, *where).limit(2)))
    if not rows:
        raise NotFound(loc, key)
    if len(rows) > 1:
        raise Invalid.one(("body", loc), f"{key!r} is ambiguous; use the id")
    return rows[0]


def resolve_target(session: Session, deployment: str, environment: str, resource: str) -> ReleaseTargetRow:
    dep = _one(session, DeploymentRow, "slug", deployment, "deployment")
    env = _one(session, EnvironmentRow, "name", environment, "environment", EnvironmentRow.system_id == dep.system_id)
    res = _one(session, ResourceRow, "identifier", resource, "resource")
    target = session.exec(select(ReleaseTargetRow).where(
        ReleaseTargetRow.deployment_id == dep.id,
        ReleaseTargetRow.environment_id == env.id,
        ReleaseTargetRow.resource_id == res.id,
    )).first()
    if target is None:
        raise NotFound("release target", f"{dep.slug}/{env.name}/{res.identifier}")
    return target


def resolve_version(session: Session, deployment_id: str, key: str) -> DeploymentVersionRow:
    row: DeploymentVersionRow = _one(
        session, DeploymentVersionRow, "tag", key, "version", DeploymentVersionRow.deployment_id == deployment_id
    )
    return row


def lock(session: Session, target_id: str) -> None:
    session.execute(
        update(ReleaseTargetRow)
        .where(col(ReleaseTargetRow.id) == target_id)
        .values(lock_seq=ReleaseTargetRow.lock_seq + 1)
    )


def gate(ctx: Context, target: ReleaseTargetRow, version: DeploymentVersionRow, lease: timedelta) -> GateResult:
    lock(ctx.session, target.id)
    snapshot = load_snapshot(ctx.session, [target.id])
    decision = decide(snapshot, target.id, ctx.now, version_id=version.id)
    if decision.outcome is not Outcome.GO:
        return GateResult(decision, None)
    deployment = ctx.session.get(DeploymentRow, target.deployment_id)
    assert deployment is not None
    agent_id = ctx.actor.job_agent_id or deployment.job_agent_id
    agent = ctx.session.get(JobAgentRow, agent_id) if agent_id else None
    attempt = 1 + max((j.attempt for j in snapshot.jobs.get(target.id, ()) if j.version_id == version.id), default=0)
    config = merged_config(agent.config if agent else {}, deployment.job_agent_config, version.config)
    job = new_job(target.id, version.id, attempt, agent_id, config, "gate", ctx.now,
                  status=JobStatus.IN_PROGRESS, lease=lease)
    ctx.session.add(job)
    ctx.session.flush()
    audit(ctx.session, ctx.actor, ctx.now, "create", "job", job.id, None, job_doc(job))
    triggers.mark_ids(ctx.session, [target.id])
    return GateResult(decision, job)


def request_redeploy(ctx: Context, target: ReleaseTargetRow, version_key: str | None, reason: str) -> ReleaseTargetRow:
    """Ask the loop to (re)deploy a version that is current or succeeded here before."""
    lock(ctx.session, target.id)
    successes = list(ctx.session.exec(select(JobRow).where(
        JobRow.release_target_id == target.id, JobRow.status == JobStatus.SUCCESSFUL.value)))
    if version_key is None:
        if not successes:
            raise Invalid.one(("body", "version"), "the target has no current version to redeploy")
        current = max(successes, key=lambda j: (j.completed_at or j.created_at, j.created_at))
        version_id = current.version_id
    else:
        version_id = resolve_version(ctx.session, target.deployment_id, version_key).id
        if version_id not in {j.version_id for j in successes}:
            raise Invalid.one(("body", "version"), "only a version that succeeded on this target can be redeployed")
    before = {"requestedVersionId": target.requested_version_id}
    ctx.session.execute(
        update(ReleaseTargetRow)
        .where(col(ReleaseTargetRow.id) == target.id)
        .values(
            requested_version_id=version_id,
            requested_by=ctx.actor.name,
            requested_reason=reason,
            requested_at=ctx.now,
            dirty_generation=ReleaseTargetRow.dirty_generation + 1,
        )
    )
    ctx.session.refresh(target)
    audit(ctx.session, ctx.actor, ctx.now, "redeploy", "releaseTarget", target.id, before,
          {"requestedVersionId": version_id, "reason": reason})
    return target
