"""Taking the measurements that are due, durably, from one or several controller processes.

Three steps per pass, so that no transaction is held open across network I/O:
1. *claim*: in one transaction, pick runs whose next measurement is due (``FOR UPDATE SKIP LOCKED``
   on PostgreSQL), note which (metric, sequence number) each owes, and lease the run with a token;
2. *measure*: outside any transaction, on a small thread pool, every request bounded by its timeout;
3. *record*: in one transaction per run, insert the measurements if the lease is still ours, then
   settle the run (its state is recomputed from every stored measurement).

The unique (run, metric, seq) constraint means a measurement is recorded at most once; the schedule
derived from stored measurements means none is skipped. A controller that dies between 1 and 3
leaves a lease that lapses, and the measurement is taken again by whoever claims the run next: the
I/O may repeat, the record never does.

Must not: hold a database transaction during I/O, or let a provider problem escape as an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from controller.ids import new_id
from controller.rules.verification import HttpProviderSpec, PrometheusProviderSpec, VerificationSpec
from controller.store import verifications
from controller.store.db import Store
from controller.store.tables import MeasurementRow, VerificationRunRow
from controller.verification.analysis import classify, run_state
from controller.verification.providers import Prober, Reading, stored

log = logging.getLogger(__name__)
LEASE_MARGIN = timedelta(seconds=30)


@dataclass(frozen=True)
class Due:
    run_id: str
    token: str
    spec: VerificationSpec
    context: dict[str, Any]
    owed: tuple[tuple[int, int], ...]  # (metric index, sequence number)


class Verifier:
    def __init__(self, store: Store, prober: Prober | None = None, *, batch_size: int = 50, workers: int = 8) -> None:
        self.store = store
        self.prober = prober or Prober()
        self.batch_size = batch_size
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.prober.close()

    def run_pass(self, now: datetime) -> int:
        """Take every measurement due at ``now``; returns how many were recorded."""
        recorded = 0
        while True:
            with self.store.transaction() as session:
                due = claim_due(session, now, self.batch_size)
            if not due:
                return recorded
            readings = list(self._pool.map(self._measure, due))
            for item, taken in zip(due, readings, strict=True):
                with self.store.transaction() as session:
                    recorded += record(session, item, taken, now)
            if len(due) < self.batch_size:
                return recorded

    def _measure(self, due: Due) -> list[Reading]:
        out = []
        for metric_index, _ in due.owed:
            try:
                out.append(self.prober.measure(due.spec.metrics[metric_index], due.context))
            except Exception as exc:  # a provider bug is an error measurement, never a dead pass
                log.exception("measurement failed", extra={"run": due.run_id})
                out.append(Reading(None, f"{type(exc).__name__}: {exc}"))
        return out


def claim_due(session: Session, now: datetime, limit: int) -> list[Due]:
    stmt = (
        select(VerificationRunRow)
        .where(VerificationRunRow.status == "running", col(VerificationRunRow.next_measurement_at) <= now,
               or_(col(VerificationRunRow.lease_expires_at).is_(None), col(VerificationRunRow.lease_expires_at) <= now))
        .order_by(col(VerificationRunRow.next_measurement_at), col(VerificationRunRow.id))
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    claimed = []
    for run in session.exec(stmt):
        spec = VerificationSpec.model_validate(run.spec)
        taken = verifications.as_measurements(verifications.measurements(session, run.id))
        state = run_state(spec, taken, run.started_at)
        owed = tuple((i, state.metrics[i].taken) for i in state.due(now))
        if not owed:  # nothing due after all (the stored next instant was stale): repair it
            verifications.settle(session, run, now)
            continue
        run.lease_token = new_id()
        run.lease_expires_at = now + timedelta(seconds=_longest_timeout(spec, owed)) + LEASE_MARGIN
        session.add(run)
        claimed.append(Due(run.id, run.lease_token, spec, dict(run.context), owed))
    return claimed


def record(session: Session, due: Due, readings: Sequence[Reading], now: datetime) -> int:
    run = session.get(VerificationRunRow, due.run_id)
    if run is None:
        return 0
    verifications.lock(session, run)
    if run.lease_token != due.token:  # our lease lapsed and someone else took the run over
        log.info("verification lease lost; measurements dropped", extra={"run": run.id})
        return 0
    recorded = 0
    for (metric_index, seq), reading in zip(due.owed, readings, strict=True):
        status, message = classify(due.spec.metrics[metric_index], reading.result, reading.error)
        row = MeasurementRow(id=new_id(), run_id=run.id, metric=metric_index, seq=seq, status=status.value,
                             message=message[:2000], result=stored(reading.result), duration_ms=reading.duration_ms,
                             measured_at=now)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            continue
        recorded += 1
    verifications.settle(session, run, now)
    return recorded


def next_due_at(session: Session) -> datetime | None:
    """When the loop must wake for a measurement, or for a lapsed lease of a run someone claimed."""
    running, leased = VerificationRunRow.status == "running", col(VerificationRunRow.lease_expires_at)
    due = session.exec(select(func.min(VerificationRunRow.next_measurement_at)).where(running, leased.is_(None))).one()
    lapse = session.exec(select(func.min(leased)).where(running)).one()
    return min((t for t in (due, lapse) if t is not None), default=None)


def _longest_timeout(spec: VerificationSpec, owed: Sequence[tuple[int, int]]) -> float:
    timeouts = [p.timeout for p in (spec.metrics[i].provider for i, _ in owed)
                if isinstance(p, (HttpProviderSpec, PrometheusProviderSpec))]
    return max(timeouts, default=0.0)
