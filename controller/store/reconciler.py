"""One controller pass over the database: claim due targets, reconcile them, apply the results.

A target is due when it is dirty (``dirty_generation > evaluated_generation``) or its
``next_evaluation_at`` has come. Batches are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
so several controller processes share the work and never evaluate one target at once; SQLite has a
single writer. Each batch is one transaction: the decision, the jobs it creates and the generation
it saw commit together, so a crash mid-pass loses nothing and repeats nothing. The unique
(target, version, attempt) constraint makes a duplicate job impossible under any interleaving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from controller.clock import Clock
from controller.decision import document, policy_revisions
from controller.engine import Engine
from controller.reconcile import CreateJob, Reconciled, StartVerification, reconcile
from controller.store import collector, triggers, verifications
from controller.store.db import Store
from controller.store.facts import load_snapshot
from controller.store.jobs import expire_leases, new_job
from controller.store.repo import insert_many
from controller.store.tables import DecisionRow, JobRow, ReleaseTargetRow
from controller.store.verifier import Verifier, next_due_at

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    evaluated: int = 0
    jobs_created: int = 0
    decisions_logged: int = 0
    leases_expired: int = 0
    measurements: int = 0
    verifications_started: int = 0
    logged_outcomes: list[str] = field(default_factory=list)  # per decision logged, for metrics
    next_wake_at: datetime | None = None


class Reconciler:
    def __init__(self, store: Store, *, batch_size: int = 500, max_batches: int = 1000,
                 sweep_interval: timedelta = timedelta(minutes=10), verifier: Verifier | None = None,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock
        self.verifier = verifier or Verifier(store)
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.sweep_interval = sweep_interval
        self._last_sweep_at: datetime | None = None

    def run_pass(self, now: datetime) -> PassResult:
        result = PassResult()
        with self.store.transaction() as session:
            result.leases_expired = len(expire_leases(session, now))
            triggers.expand(session)
            if self._last_sweep_at is None or now - self._last_sweep_at >= self.sweep_interval:
                triggers.mark(session)  # the safety net: everything gets looked at again
                self._last_sweep_at = now
        # Measurements first: a run they settle re-triggers its readers within this same pass.
        result.measurements = self.verifier.run_pass(now)
        for _ in range(self.max_batches):
            with self.store.transaction() as session:
                claimed = claim_due(session, now, self.batch_size)
                if not claimed:
                    break
                with collector.paused():  # one bounded batch: see controller/store/collector.py
                    self._process(session, claimed, self._batch_now(now), result)
        with self.store.session() as session:
            result.next_wake_at = next_wake_at(session)
        return result

    def close(self) -> None:
        self.verifier.close()

    def _batch_now(self, pass_now: datetime) -> datetime:
        """The instant a batch is decided at: read once per batch, after its row locks are taken.

        A pass can run for seconds, and meanwhile another controller may evaluate one of these targets
        and log a decision. Deciding at the pass's start would log this decision before that one, at an
        instant older than facts it reads (a job completed since). Read after the claim, the instant is
        later than every decision committed for these targets before it.
        """
        return pass_now if self.clock is None else max(pass_now, self.clock.now())

    def _process(self, session: Session, claimed: list[ReleaseTargetRow], now: datetime, result: PassResult) -> None:
        snapshot = load_snapshot(session, [t.id for t in claimed])
        engine = Engine(snapshot, now)
        decisions: list[dict[str, Any]] = []
        evaluated: dict[bool, list[dict[str, Any]]] = {False: [], True: []}  # by: its request is fulfilled
        for target in claimed:
            reconciled = reconcile(snapshot, target.id, now, engine)
            result.jobs_created += self._apply_jobs(session, reconciled, now)
            result.verifications_started += sum(
                verifications.start(session, action, now) is not None
                for action in reconciled.actions if isinstance(action, StartVerification))
            if reconciled.log_key != target.last_decision_key:
                fact = snapshot.targets[target.id]
                decisions.append(_decision_row(reconciled, fact.environment_id, fact.deployment_id))
                result.logged_outcomes.append(reconciled.decision.outcome.value)
            evaluated[reconciled.fulfils_request and bool(reconciled.actions)].append({
                "target": target.id, "generation": target.dirty_generation,
                "next_at": reconciled.next_evaluation_at, "key": reconciled.log_key})
        # The batch's writes as two statements, not two per target: in order, in this one transaction.
        insert_many(session, DecisionRow, decisions)
        for fulfilled, rows in evaluated.items():
            if rows:
                session.execute(_EVALUATED[fulfilled], rows)
        result.decisions_logged += len(decisions)
        result.evaluated += len(claimed)

    @staticmethod
    def _apply_jobs(session: Session, reconciled: Reconciled, now: datetime) -> int:
        created = 0
        for action in reconciled.actions:
            if not isinstance(action, CreateJob):
                continue
            job = new_job(action.target_id, action.version_id, action.attempt, action.job_agent_id, action.config,
                          action.reason, now)
            try:
                with session.begin_nested():
                    session.add(job)
            except IntegrityError:
                # Another process created this (target, version, attempt) first: nothing to do.
                log.info("job already exists", extra={"target": action.target_id, "attempt": action.attempt})
                continue
            created += 1
        return created


def claim_due(session: Session, now: datetime, limit: int) -> list[ReleaseTargetRow]:
    due = or_(
        col(ReleaseTargetRow.dirty_generation) > col(ReleaseTargetRow.evaluated_generation),
        col(ReleaseTargetRow.next_evaluation_at) <= now,
    )
    # Grouped by (deployment, environment): a batch then reads one environment's siblings and
    # dependencies, not every environment's (loading them is most of a batch's cost).
    order = (col(ReleaseTargetRow.deployment_id), col(ReleaseTargetRow.environment_id), col(ReleaseTargetRow.id))
    stmt = select(ReleaseTargetRow).where(due).order_by(*order).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        return list(session.exec(stmt.with_for_update(skip_locked=True)))
    claimed = list(session.exec(stmt))
    if claimed:
        # SQLite has no row locks: bump lock_seq (as gate calls and redeploys do) to take the write lock
        # before the snapshot is read. Otherwise a gate call could commit a job between our read and our
        # write (two active jobs on one target), and the driver would commit each job insert on its own
        # (releasing the outermost SAVEPOINT is a COMMIT), breaking the one-transaction-per-batch rule.
        ids = [t.id for t in claimed]
        session.execute(update(ReleaseTargetRow).where(col(ReleaseTargetRow.id).in_(ids))
                        .values(lock_seq=ReleaseTargetRow.lock_seq + 1).execution_options(synchronize_session=False))
    return claimed


def next_wake_at(session: Session) -> datetime | None:
    """The earliest instant something becomes due by time alone: a check, a lease expiry or a measurement."""
    check = session.exec(select(func.min(ReleaseTargetRow.next_evaluation_at))).one()
    lease = session.exec(select(func.min(JobRow.lease_expires_at)).where(
        col(JobRow.status).in_(["inProgress", "actionRequired"]))).one()
    times = [t for t in (check, lease, next_due_at(session)) if t is not None]
    return min(times) if times else None


def _decision_row(reconciled: Reconciled, environment_id: str, deployment_id: str) -> dict[str, Any]:
    decision = reconciled.decision
    return {
        "decision_id": decision.decision_id,
        "release_target_id": decision.target_id,
        "deployment_id": deployment_id,
        "environment_id": environment_id,
        "version_id": decision.desired.id if decision.desired else None,
        "outcome": decision.outcome.value,
        "reason": decision.reason,
        "evaluated_at": decision.evaluated_at,
        "policy_revisions": policy_revisions(decision.policies),
        "document": document(decision),  # the engine's JSON serializer writes its timestamps
    }


# A target's evaluation, recorded: the generation it saw, when it is due next, what was logged; and,
# when its redeploy request was acted on, the request cleared. Run with one parameter set per target.
# Core, on the table: the ORM would match each UPDATE against every object in the session (the batch).
_T: Table = SQLModel.metadata.tables["release_target"]
_EVALUATED_VALUES: dict[str, Any] = {
    "evaluated_generation": bindparam("generation"),
    "next_evaluation_at": bindparam("next_at"),
    "last_decision_key": bindparam("key"),
}
_EVALUATED = {
    False: update(_T).where(_T.c.id == bindparam("target")).values(_EVALUATED_VALUES),
    True: update(_T).where(_T.c.id == bindparam("target")).values(_EVALUATED_VALUES | dict.fromkeys(
        ("requested_version_id", "requested_by", "requested_reason", "requested_at"))),
}
