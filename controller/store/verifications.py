"""Verification runs in the database: starting, settling, resolving, and their effects (SPEC §7).

A run's state is derived from its stored measurements (``controller.verification.analysis``) and
written back after every change, so readers and the loop never compute it differently. Effects of a
status change, in the same transaction as the change:
- the job's verification summary (``job.verification``/``job.verified_at``) is refreshed, and the
  targets that read the job are re-triggered (progression with ``requireVerificationPassed``);
- a failed run whose rule says ``onFailure: rollback`` queues a redeploy of the target's previous
  good version (the latest other version that succeeded there and did not fail verification),
  audited, if the failed version is still the target's current one.

Must not: take measurements (``controller.store.verifier`` does, outside any transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from controller.auth import Principal, Role
from controller.errors import Conflict, Invalid
from controller.facts import JobStatus
from controller.ids import new_id
from controller.reconcile import StartVerification
from controller.rules.verification import VerificationSpec
from controller.store import jobs, triggers
from controller.store.documents import job_doc, measurement_doc, verification_doc
from controller.store.gate import queue_redeploy
from controller.store.inventory import Context
from controller.store.repo import audit, jsonable
from controller.store.tables import JobRow, MeasurementRow, ReleaseTargetRow, VerificationRunRow
from controller.verification.analysis import (
    Measurement,
    MeasurementStatus,
    RunStatus,
    job_verification,
    run_state,
)

# Who the audit log names for what a failed verification does on its own.
VERIFIER = Principal(token_id="system", name="verification", role=Role.ADMIN)
RESOLUTIONS = (RunStatus.PASSED, RunStatus.FAILED)


def start(session: Session, action: StartVerification, now: datetime) -> VerificationRunRow | None:
    """A run for a job that succeeded; None if it already has one for this rule (or is gone)."""
    job = session.get(JobRow, action.job_id)
    if job is None or job.status != JobStatus.SUCCESSFUL.value:
        return None
    spec = VerificationSpec.model_validate(action.spec)
    run = VerificationRunRow(
        id=new_id(), job_id=job.id, release_target_id=job.release_target_id, version_id=job.version_id,
        policy_id=action.policy_id, policy_revision=action.policy_revision, rule_id=action.rule_id,
        spec=dict(action.spec), context=jsonable(_context(session, job)), started_at=now, updated_at=now,
        metrics=[],
    )
    _write_state(run, spec, [], now)
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:
        return None  # another controller started it first
    refresh_job(session, job, now)
    return run


def _context(session: Session, job: JobRow) -> dict[str, Any]:
    """The documents templates read (what the job's agent was given), frozen when the run starts."""
    given = jobs.context(session, job)
    return {"job": job_doc(job), **{name: given[name] for name in ("resource", "environment", "deployment", "version")}}


def measurements(session: Session, run_id: str) -> list[MeasurementRow]:
    return list(session.exec(select(MeasurementRow).where(MeasurementRow.run_id == run_id)
                             .order_by(col(MeasurementRow.metric), col(MeasurementRow.seq))))


def as_measurements(rows: Sequence[MeasurementRow]) -> list[Measurement]:
    return [Measurement(r.metric, r.seq, MeasurementStatus(r.status), r.measured_at) for r in rows]


def _write_state(run: VerificationRunRow, spec: VerificationSpec, taken: Sequence[Measurement], now: datetime) -> None:
    state = run_state(spec, taken, run.started_at)
    run.status = state.status.value
    run.message = state.message
    run.metrics = [m.document() for m in state.metrics]
    run.next_measurement_at = state.next_measurement_at
    run.completed_at = None if state.status is RunStatus.RUNNING else (run.completed_at or now)
    run.updated_at = now


def settle(session: Session, run: VerificationRunRow, now: datetime) -> None:
    """Recompute the run from its measurements, release its lease, and apply what a change implies."""
    before = run.status
    spec = VerificationSpec.model_validate(run.spec)
    _write_state(run, spec, as_measurements(measurements(session, run.id)), now)
    run.lease_token, run.lease_expires_at = None, None
    session.add(run)
    if run.status != before:
        _changed(session, run, spec, now)


def resolve(ctx: Context, run: VerificationRunRow, status: str, reason: str) -> VerificationRunRow:
    """A person's verdict on an inconclusive run."""
    lock(ctx.session, run)
    if run.status != RunStatus.INCONCLUSIVE.value:
        raise Conflict(("path", "id"), f"the run is {run.status}; only an inconclusive run can be resolved")
    if status not in {s.value for s in RESOLUTIONS}:
        raise Invalid.one(("body", "status"), "must be 'passed' or 'failed'")
    before = verification_doc(run)
    run.status, run.resolved_by, run.resolved_reason = status, ctx.actor.name, reason
    run.message = f"resolved as {status} by {ctx.actor.name}: {reason}"
    run.updated_at = ctx.now
    ctx.session.add(run)
    audit(ctx.session, ctx.actor, ctx.now, "resolve", "verification", run.id, before, verification_doc(run))
    _changed(ctx.session, run, VerificationSpec.model_validate(run.spec), ctx.now)
    return run


def lock(session: Session, run: VerificationRunRow) -> None:
    """The run's row lock (PostgreSQL) or the write lock (SQLite), then a fresh read."""
    session.execute(update(VerificationRunRow).where(col(VerificationRunRow.id) == run.id)
                    .values(updated_at=VerificationRunRow.updated_at).execution_options(synchronize_session=False))
    session.refresh(run)


def _changed(session: Session, run: VerificationRunRow, spec: VerificationSpec, now: datetime) -> None:
    job = session.get(JobRow, run.job_id)
    if job is not None:
        refresh_job(session, job, now)
    if run.status == RunStatus.FAILED.value and spec.on_failure == "rollback":
        _roll_back(session, run, now)


def refresh_job(session: Session, job: JobRow, now: datetime) -> None:
    """The job's verification is the worst of its runs'; a change re-triggers whoever reads the job."""
    statuses = list(session.exec(select(VerificationRunRow.status).where(VerificationRunRow.job_id == job.id)))
    verification = job_verification(statuses)
    if verification == job.verification:
        return
    job.verification = verification
    job.verified_at = now if verification == RunStatus.PASSED.value else None
    job.updated_at = now
    session.add(job)
    triggers.job_changed(session, job)


def _roll_back(session: Session, run: VerificationRunRow, now: datetime) -> None:
    target = session.get(ReleaseTargetRow, run.release_target_id)
    if target is None:
        return
    successes = sorted(
        session.exec(select(JobRow).where(JobRow.release_target_id == target.id,
                                          JobRow.status == JobStatus.SUCCESSFUL.value)),
        key=lambda j: (j.completed_at or j.created_at, j.created_at), reverse=True,
    )
    if not successes or successes[0].version_id != run.version_id:
        run.message += "; no rollback: the target has moved on from the failed version"
        return
    previous = next((j for j in successes if j.version_id != run.version_id
                     and j.verification in (None, RunStatus.PASSED.value)), None)
    if previous is None:
        run.message += "; no rollback: no earlier good version succeeded on this target"
        return
    run.rollback_version_id = previous.version_id
    session.add(run)
    reason = f"verification run {run.id} failed: {run.message}"
    queue_redeploy(session, target, previous.version_id, VERIFIER, reason[:1000], now, action="rollback")


def document(session: Session, run: VerificationRunRow, *, with_measurements: bool = False) -> dict[str, Any]:
    doc = verification_doc(run)
    if with_measurements:
        names = [m.get("name", "") for m in run.spec.get("metrics", [])]
        doc["measurements"] = [measurement_doc(m, names[m.metric] if m.metric < len(names) else str(m.metric))
                               for m in measurements(session, run.id)]
    return doc


def for_job(session: Session, job_id: str) -> list[VerificationRunRow]:
    return list(session.exec(select(VerificationRunRow).where(VerificationRunRow.job_id == job_id)
                             .order_by(col(VerificationRunRow.id))))


def query(*, job_id: str | None = None, release_target_id: str | None = None, status: str | None = None) -> Any:
    stmt = select(VerificationRunRow)
    if job_id is not None:
        stmt = stmt.where(VerificationRunRow.job_id == job_id)
    if release_target_id is not None:
        stmt = stmt.where(VerificationRunRow.release_target_id == release_target_id)
    if status is not None:
        stmt = stmt.where(VerificationRunRow.status == status)
    return stmt
