"""Jobs: creation from reconcile actions, agent claims, status reports, heartbeats and leases.

A claim is one conditional UPDATE (``WHERE status = 'pending'``): whoever updates the row owns the
job; everyone else gets a conflict. An ``inProgress`` job whose lease lapses becomes ``lost``, which
the retry rule treats like a failure. Every status change re-triggers the targets that read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, update
from sqlmodel import Session, col, select

from controller.auth import Principal, Role
from controller.errors import Conflict, Forbidden, Invalid
from controller.facts import ACTIVE_JOB_STATUSES, JobStatus
from controller.ids import new_id
from controller.store import triggers
from controller.store.documents import (
    deployment_doc,
    environment_doc,
    job_doc,
    release_target_doc,
    resource_doc,
    version_doc,
)
from controller.store.inventory import Context
from controller.store.repo import audit
from controller.store.tables import (
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobRow,
    ReleaseTargetRow,
    ResourceRow,
)

TERMINAL = frozenset(JobStatus) - ACTIVE_JOB_STATUSES
# Who may move a job where: agents report progress; nothing leaves a terminal status.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset(JobStatus) - {JobStatus.PENDING, JobStatus.LOST},
    JobStatus.IN_PROGRESS: frozenset(JobStatus) - {JobStatus.PENDING, JobStatus.INVALID_JOB_AGENT},
    JobStatus.ACTION_REQUIRED: frozenset(JobStatus) - {JobStatus.PENDING, JobStatus.INVALID_JOB_AGENT},
}


def new_job(
    target_id: str, version_id: str, attempt: int, agent_id: str | None, config: Mapping[str, Any],
    reason: str, now: datetime, *, status: JobStatus = JobStatus.PENDING, lease: timedelta | None = None,
) -> JobRow:
    started = now if status is JobStatus.IN_PROGRESS else None
    return JobRow(
        id=new_id(), release_target_id=target_id, version_id=version_id, job_agent_id=agent_id,
        status=status.value, attempt=attempt, config=dict(config), links={}, reason=reason,
        created_at=now, updated_at=now, started_at=started,
        lease_expires_at=now + lease if started and lease else None,
    )


def check_access(job: JobRow, principal: Principal) -> None:
    """An agent token reaches only the jobs of the job agent it is bound to."""
    if principal.role is Role.AGENT and job.job_agent_id != principal.job_agent_id:
        raise Forbidden("this job belongs to another job agent")


def claim(ctx: Context, job: JobRow, lease: timedelta) -> JobRow:
    check_access(job, ctx.actor)
    result = ctx.session.execute(
        update(JobRow)
        .where(col(JobRow.id) == job.id, col(JobRow.status) == JobStatus.PENDING.value)
        .values(status=JobStatus.IN_PROGRESS.value, started_at=ctx.now, updated_at=ctx.now,
                lease_expires_at=ctx.now + lease)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        ctx.session.rollback()
        raise Conflict(("path", "id"), "the job is not pending: it was already claimed or finished")
    ctx.session.refresh(job)
    audit(ctx.session, ctx.actor, ctx.now, "claim", "job", job.id, None, job_doc(job))
    return job


def lock(session: Session, job: JobRow) -> None:
    """Take the job's row lock (PostgreSQL) or the write lock (SQLite), then re-read it.

    A status read before a concurrent writer committed (the loop marking the job lost, another
    report) must not be acted on: the check and the write have to see the same row.
    """
    session.execute(
        update(JobRow).where(col(JobRow.id) == job.id).values(updated_at=JobRow.updated_at)
        .execution_options(synchronize_session=False)
    )
    session.refresh(job)


def heartbeat(ctx: Context, job: JobRow, lease: timedelta) -> JobRow:
    check_access(job, ctx.actor)
    lock(ctx.session, job)
    if JobStatus(job.status) not in (JobStatus.IN_PROGRESS, JobStatus.ACTION_REQUIRED):
        raise Conflict(("path", "id"), f"the job is {job.status}; only running jobs take heartbeats")
    job.lease_expires_at = ctx.now + lease
    job.updated_at = ctx.now
    ctx.session.add(job)
    return job


def report(ctx: Context, job: JobRow, fields: Mapping[str, Any], lease: timedelta) -> JobRow:
    check_access(job, ctx.actor)
    lock(ctx.session, job)
    before = job_doc(job)
    status = fields.get("status")
    if status is not None and status != job.status:
        old, new = JobStatus(job.status), JobStatus(status)
        if new not in TRANSITIONS.get(old, frozenset()):
            raise Conflict(("body", "status"), f"a job cannot go from {old.value} to {new.value}")
        job.status = new.value
        if new is JobStatus.IN_PROGRESS and job.started_at is None:
            job.started_at = ctx.now
            job.lease_expires_at = ctx.now + lease
        if new in TERMINAL:
            job.completed_at = ctx.now
            job.lease_expires_at = None
    for name in ("message", "external_id", "links"):
        if fields.get(name) is not None:
            setattr(job, name, fields[name])
    if job_doc(job) == before:
        return job
    job.updated_at = ctx.now
    ctx.session.add(job)
    audit(ctx.session, ctx.actor, ctx.now, "update", "job", job.id, before, job_doc(job))
    if job.status != before["status"]:
        triggers.job_changed(ctx.session, job)
    return job


def expire_leases(session: Session, now: datetime) -> list[JobRow]:
    """Running jobs whose agent went quiet become ``lost`` (and the retry rule takes it from there).

    Each update is conditional on the job still being stale: a report or heartbeat that committed
    after the read wins (PostgreSQL re-checks the condition once the row lock is free).
    """
    stale_now = (
        col(JobRow.status).in_([JobStatus.IN_PROGRESS.value, JobStatus.ACTION_REQUIRED.value]),
        col(JobRow.lease_expires_at) < now,
    )
    reason = "lease expired: no heartbeat"
    lost = []
    for job in list(session.exec(select(JobRow).where(*stale_now))):
        expired = session.execute(
            update(JobRow).where(col(JobRow.id) == job.id, *stale_now)
            .values(status=JobStatus.LOST.value, completed_at=now, updated_at=now,
                    message=case((col(JobRow.message) == "", reason), else_=col(JobRow.message) + "; " + reason))
            .execution_options(synchronize_session=False)
        )
        if expired.rowcount != 1:  # type: ignore[attr-defined]
            continue
        session.refresh(job)
        lost.append(job)
    # Marks last: holding target locks while waiting for the next job's lock would deadlock with a
    # report on that job (it holds the job's lock and waits for the same targets).
    for job in lost:
        triggers.job_changed(session, job)
    return lost


def context(session: Session, job: JobRow) -> dict[str, Any]:
    """Everything an agent needs to deploy: the target, its entities, the version and merged config."""
    target = session.get(ReleaseTargetRow, job.release_target_id)
    if target is None:
        raise Invalid.one(("path", "id"), "the job's release target no longer exists")
    resource = session.get(ResourceRow, target.resource_id)
    environment = session.get(EnvironmentRow, target.environment_id)
    deployment = session.get(DeploymentRow, target.deployment_id)
    version = session.get(DeploymentVersionRow, job.version_id)
    assert resource and environment and deployment and version
    return {
        **job_doc(job),
        "config": job.config,
        "releaseTarget": release_target_doc(target),
        "resource": resource_doc(resource),
        "environment": environment_doc(environment),
        "deployment": deployment_doc(deployment),
        "version": version_doc(version),
    }
