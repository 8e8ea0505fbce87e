"""Verification outcomes as pure functions of the measurements taken so far (SPEC §7).

Why it exists: the run's state is *derived*, never accumulated. Given a metric's spec and its
measurements (ordered by sequence number), ``metric_state`` says whether it is still running (and
when its next measurement is due), passed, failed or inconclusive; ``run_state`` combines the
metrics. A controller that restarts mid-run reads the stored measurements and continues exactly
where it left off: the n-th measurement is due ``intervalSeconds`` after the (n−1)-th was taken.

Rules, per metric:
- a measurement is ``error`` when the provider failed or a condition could not be evaluated;
  otherwise ``failed`` if the failure condition holds, ``passed`` if the success condition holds,
  and, when neither holds, ``inconclusive`` if both conditions are given, else ``failed`` (only a
  success condition) or ``passed`` (only a failure condition);
- failures beyond ``failureThreshold`` fail the metric; so do errors beyond ``errorThreshold``;
- ``successThreshold`` passes in a row end it early as passed;
- otherwise it ends after ``count`` measurements: inconclusive if any measurement was, or if none
  passed (a metric that never measured anything healthy has not shown health); else passed.
A run fails as soon as any metric fails, is running while any metric runs, then is inconclusive if
any metric is, and passes when every metric passed.

Must not: do I/O or read a clock: ``now`` and the measurements are arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from controller.cel import Doc, compile_expression
from controller.rules.verification import VARIABLES, MetricSpec, SleepProviderSpec, VerificationSpec


class MeasurementStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


class RunStatus(StrEnum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Measurement:
    metric: int
    seq: int
    status: MeasurementStatus
    measured_at: datetime


@dataclass(frozen=True)
class MetricState:
    name: str
    status: RunStatus
    message: str
    taken: int
    passed: int
    failed: int
    inconclusive: int
    errors: int
    next_measurement_at: datetime | None = None

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status.value, "message": self.message, "taken": self.taken,
            "passed": self.passed, "failed": self.failed, "inconclusive": self.inconclusive, "errors": self.errors,
            "nextMeasurementAt": self.next_measurement_at.isoformat() if self.next_measurement_at else None,
        }


@dataclass(frozen=True)
class RunState:
    status: RunStatus
    message: str
    metrics: tuple[MetricState, ...]

    @property
    def next_measurement_at(self) -> datetime | None:
        if self.status is not RunStatus.RUNNING:
            return None
        return min((m.next_measurement_at for m in self.metrics if m.next_measurement_at is not None), default=None)

    def due(self, now: datetime) -> list[int]:
        """The metrics whose next measurement is due at ``now``."""
        if self.status is not RunStatus.RUNNING:
            return []
        return [i for i, m in enumerate(self.metrics)
                if m.status is RunStatus.RUNNING and m.next_measurement_at is not None and m.next_measurement_at <= now]


def classify(metric: MetricSpec, result: Mapping[str, Any] | None, error: str | None) -> tuple[MeasurementStatus, str]:
    """One measurement's status and why, from what the provider returned (or its error)."""
    if error is not None or result is None:
        return MeasurementStatus.ERROR, error or "the provider returned nothing"
    activation = {"result": Doc(result)}
    if metric.failure_condition is not None:
        failure = compile_expression(metric.failure_condition, VARIABLES).match(activation)
        if failure.error is not None:
            return MeasurementStatus.ERROR, f"failureCondition could not be evaluated: {failure.error}"
        if failure.matched:
            return MeasurementStatus.FAILED, f"failureCondition holds: {metric.failure_condition}"
    if metric.success_condition is None:
        return MeasurementStatus.PASSED, f"failureCondition does not hold: {metric.failure_condition}"
    success = compile_expression(metric.success_condition, VARIABLES).match(activation)
    if success.error is not None:
        return MeasurementStatus.ERROR, f"successCondition could not be evaluated: {success.error}"
    if success.matched:
        return MeasurementStatus.PASSED, f"successCondition holds: {metric.success_condition}"
    if metric.failure_condition is not None:
        return MeasurementStatus.INCONCLUSIVE, "neither successCondition nor failureCondition holds"
    return MeasurementStatus.FAILED, f"successCondition does not hold: {metric.success_condition}"


def metric_state(metric: MetricSpec, measurements: Sequence[Measurement], started_at: datetime) -> MetricState:
    """``measurements``: this metric's, in sequence order."""
    count = {s: sum(1 for m in measurements if m.status is s) for s in MeasurementStatus}
    passed, failed = count[MeasurementStatus.PASSED], count[MeasurementStatus.FAILED]
    inconclusive, errors = count[MeasurementStatus.INCONCLUSIVE], count[MeasurementStatus.ERROR]
    taken = len(measurements)

    def state(status: RunStatus, message: str, next_at: datetime | None = None) -> MetricState:
        return MetricState(metric.name, status, message, taken, passed, failed, inconclusive, errors, next_at)

    if failed > metric.failure_threshold:
        why = f"{failed} failed measurements exceed failureThreshold {metric.failure_threshold}"
        return state(RunStatus.FAILED, why)
    if errors > metric.error_threshold:
        return state(RunStatus.FAILED, f"{errors} provider errors exceed errorThreshold {metric.error_threshold}")
    streak = metric.success_threshold
    recent = measurements[-streak:] if streak is not None else ()
    if streak is not None and taken >= streak and all(m.status is MeasurementStatus.PASSED for m in recent):
        return state(RunStatus.PASSED, f"{streak} passed in a row")
    if taken >= metric.count:
        if inconclusive or not passed:
            why = f"{inconclusive} inconclusive" if inconclusive else "no measurement passed"
            return state(RunStatus.INCONCLUSIVE, f"{taken} of {metric.count} measurements taken; {why}")
        return state(RunStatus.PASSED, f"{passed} of {metric.count} measurements passed")
    return state(RunStatus.RUNNING, f"{taken} of {metric.count} measurements taken",
                 next_measurement_at(metric, measurements, started_at))


def next_measurement_at(metric: MetricSpec, measurements: Sequence[Measurement], started_at: datetime) -> datetime:
    """The first right away, each next one an interval after the last was taken; a sleep provider's
    measurement completes its ``seconds`` after it is due."""
    due = started_at if not measurements else measurements[-1].measured_at + metric.interval
    provider = metric.provider
    if isinstance(provider, SleepProviderSpec):
        due += timedelta(seconds=provider.seconds)
    return due


def run_state(spec: VerificationSpec, measurements: Sequence[Measurement], started_at: datetime) -> RunState:
    per_metric: dict[int, list[Measurement]] = {i: [] for i in range(len(spec.metrics))}
    for m in sorted(measurements, key=lambda m: (m.metric, m.seq)):
        if m.metric in per_metric:
            per_metric[m.metric].append(m)
    metrics = tuple(metric_state(metric, per_metric[i], started_at) for i, metric in enumerate(spec.metrics))
    for status in (RunStatus.FAILED, RunStatus.RUNNING, RunStatus.INCONCLUSIVE):
        deciding = [m for m in metrics if m.status is status]
        if deciding:
            return RunState(status, "; ".join(f"{m.name}: {m.message}" for m in deciding), metrics)
    return RunState(RunStatus.PASSED, "every metric passed", metrics)


def job_verification(statuses: Sequence[str]) -> str | None:
    """A job's verification, from its runs': the worst of them (None when no run exists)."""
    for status in (RunStatus.FAILED, RunStatus.INCONCLUSIVE, RunStatus.RUNNING, RunStatus.PASSED):
        if status.value in statuses:
            return status.value
    return None
