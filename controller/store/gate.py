"""Go/no-go for agents that deploy on their own, and explicit redeploys/rollbacks (SPEC §6).

Writers first bump the target's ``lock_seq``: a row lock on PostgreSQL and the write lock on SQLite.
A redeploy does so at once. A gate call decides *before* taking it, like a seqlock reader: it reads
the target's ``_stamp``, loads and decides, and reads the stamp again. ``wait`` and ``no-go`` are
answered when the stamp did not move, without ever taking the lock (nothing is written). ``go``
takes the lock and creates the job only if the stamp, read again under the lock, still matches;
otherwise it decides again under the lock, as every call once did. Two concurrent calls for one
target are therefore still serialised where it matters: the second one to hold the lock sees the
first one's ``inProgress`` job (the stamp counts the target's jobs) and can never also get ``go``.
The write lock, which on SQLite every writer in the process shares, is held for a few statements
instead of a whole evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, func, or_, update
from sqlalchemy import select as sa_select  # sqlmodel's select types at most four columns
from sqlmodel import Session, col, select

from controller.auth import Principal
from controller.decision import Decision, Outcome, decide
from controller.errors import Invalid, NotFound
from controller.facts import ACTIVE_JOB_STATUSES, JobStatus
from controller.ids import looks_like_id
from controller.reconcile import merged_config
from controller.snapshot import Snapshot
from controller.store import triggers
from controller.store.documents import job_doc
from controller.store.facts import load_snapshot
from controller.store.inventory import Context
from controller.store.jobs import new_job
from controller.store.repo import audit
from controller.store.tables import (
    DeploymentRow,
    DeploymentTriggerRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobAgentRow,
    JobRow,
    ReleaseTargetRow,
    ResourceRow,
)

# Lock-free decisions a gate call tries while the facts keep moving under it; then it decides under the lock.
OPTIMISTIC_ATTEMPTS = 2


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
    found = _target_by_keys(session, deployment, environment, resource)
    if found is not None:
        return found
    # Something is missing, ambiguous or named oddly: resolve step by step, which says what.
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


# The hot path's statements, built once (building and keying one costs more than running it).
_D, _E, _R, _T = DeploymentRow, EnvironmentRow, ResourceRow, ReleaseTargetRow
_BY_KEYS = (
    sa_select(_T, _D, _E, _R, select(func.count()).where(col(_D.slug) == bindparam("deployment")).scalar_subquery())
    .join(_D, col(_D.id) == _T.deployment_id)
    .join(_E, col(_E.id) == _T.environment_id)
    .join(_R, col(_R.id) == _T.resource_id)
    .where(or_(col(_D.id) == bindparam("deployment"), col(_D.slug) == bindparam("deployment")),
           or_(col(_E.id) == bindparam("environment"), col(_E.name) == bindparam("environment")),
           or_(col(_R.id) == bindparam("resource"), col(_R.identifier) == bindparam("resource")))
    .limit(2)
)
_VERSION = select(DeploymentVersionRow).where(
    DeploymentVersionRow.deployment_id == bindparam("deployment"),
    or_(col(DeploymentVersionRow.id) == bindparam("key"), col(DeploymentVersionRow.tag) == bindparam("key")),
).limit(2)
_LOCK = (update(_T).where(col(_T.id) == bindparam("target")).values(lock_seq=_T.lock_seq + 1)
         .execution_options(synchronize_session=False))  # nothing reads lock_seq back
_MARK = (update(_T).where(col(_T.id) == bindparam("target")).values(triggers.DIRTY)  # triggers.mark_ids, for one
         .execution_options(synchronize_session=False))
_ON_TARGET = col(JobRow.release_target_id) == _T.id
_STAMP = select(
    _T.dirty_generation,
    select(func.count()).where(DeploymentTriggerRow.deployment_id == _T.deployment_id).scalar_subquery(),
    select(func.count()).where(_ON_TARGET).scalar_subquery(),
    select(func.count()).where(_ON_TARGET, col(JobRow.status).in_(sorted(s.value for s in ACTIVE_JOB_STATUSES)))
    .scalar_subquery(),
).where(col(_T.id) == bindparam("target"))


def _target_by_keys(session: Session, deployment: str, environment: str, resource: str) -> ReleaseTargetRow | None:
    """The common case in one query: every key names exactly one row, as ``_one`` would resolve it. None
    whenever ``_one`` might differ or complain: no match, a deployment slug shared across systems, or a
    key that looks like an id naming a row by name. The rows stay referenced by the session (its
    identity map holds them weakly): the job's context reads them again."""
    rows = session.execute(_BY_KEYS, {"deployment": deployment, "environment": environment, "resource": resource})
    found = rows.all()
    if len(found) != 1:
        return None
    target, dep, env, res, same_slug = found[0]
    if same_slug > 1 and dep.id != deployment:
        return None
    if any(looks_like_id(key) and row.id != key for row, key in ((dep, deployment), (env, environment),
                                                                  (res, resource))):
        return None
    session.info.setdefault("resolved", []).append(found[0])
    row: ReleaseTargetRow = target
    return row


def resolve_version(session: Session, deployment_id: str, key: str) -> DeploymentVersionRow:
    rows = session.exec(_VERSION, params={"deployment": deployment_id, "key": key}).all()
    # An id wins over a tag that happens to equal it, as in ``_one``.
    found = next((r for r in rows if r.id == key), rows[0] if len(rows) == 1 else None)
    if found is not None:
        return found
    row: DeploymentVersionRow = _one(
        session, DeploymentVersionRow, "tag", key, "version", DeploymentVersionRow.deployment_id == deployment_id
    )
    return row


def lock(session: Session, target_id: str) -> None:
    session.execute(_LOCK, {"target": target_id})


def _stamp(session: Session, target_id: str) -> Row[Any] | None:
    """What moves whenever a fact the target's decision reads may have changed (a seqlock's sequence):
    its dirty generation, which every trigger bumps in the writer's own transaction (triggers.py); its
    deployment's deferred target-set triggers, which reach the generation only when the loop expands
    them; and its jobs, all and active ones, since the loop creates jobs without marking their target."""
    return session.connection().execute(_STAMP, {"target": target_id}).first()


def _decide(ctx: Context, target_id: str, version_id: str) -> tuple[Snapshot, Decision]:
    snapshot = load_snapshot(ctx.session, [target_id])
    return snapshot, decide(snapshot, target_id, ctx.now, version_id=version_id)


def gate(ctx: Context, target: ReleaseTargetRow, version: DeploymentVersionRow, lease: timedelta) -> GateResult:
    locked = False
    for _ in range(OPTIMISTIC_ATTEMPTS):
        seen = _stamp(ctx.session, target.id)
        snapshot, decision = _decide(ctx, target.id, version.id)
        if decision.outcome is Outcome.GO:
            lock(ctx.session, target.id)
            locked = True
        if _stamp(ctx.session, target.id) == seen:
            break  # nothing moved since ``seen``: the facts were consistent, and (``go``) still hold
        if locked:
            snapshot, decision = _decide(ctx, target.id, version.id)
            break
    else:
        lock(ctx.session, target.id)
        snapshot, decision = _decide(ctx, target.id, version.id)
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
    ctx.session.execute(_MARK, {"target": target.id})  # the loop logs the new decision (JobActive)
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
    queue_redeploy(ctx.session, target, version_id, ctx.actor, reason, ctx.now)
    return target


def queue_redeploy(session: Session, target: ReleaseTargetRow, version_id: str, actor: Principal, reason: str,
                   now: datetime, action: str = "redeploy") -> None:
    """Record the request the loop honours once the gates allow (no-downgrade aside), and audit it."""
    before = {"requestedVersionId": target.requested_version_id}
    session.execute(
        update(ReleaseTargetRow)
        .where(col(ReleaseTargetRow.id) == target.id)
        .values(
            requested_version_id=version_id,
            requested_by=actor.name,
            requested_reason=reason,
            requested_at=now,
            dirty_generation=ReleaseTargetRow.dirty_generation + 1,
        )
    )
    session.refresh(target)
    audit(session, actor, now, action, "releaseTarget", target.id, before,
          {"requestedVersionId": version_id, "reason": reason})
