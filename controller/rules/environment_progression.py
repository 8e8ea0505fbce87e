"""``environmentProgression``: a version reaches this environment only after it succeeded upstream.

Why it exists: promotion order ("production after staging") is stated as a CEL selector over the
other environments of the system. For each dependency environment E, enough of this deployment's
targets in E must have succeeded with this version (``minimumSuccessPercentage``), that success
must have soaked (``minimumSoakTimeMinutes``) and must not be too old (``maximumAgeHours``).

Timing, exact: with N targets in E, k = max(1, ceil(N·pct/100)) computed in exact fractions (100%
of 3 is 3, never 4 through float error); ``tk`` is the k-th earliest success time. E is pending
until ``tk + soak`` (``next_check_at`` exactly then) and allowed from that instant
(``satisfied_at``). Stale means ``now − tk > maxAge``, strictly: at ``tk + maxAge`` E is still
allowed and it is denied from the next representable instant, so an allowed E's
``next_check_at`` is ``tk + maxAge + 1 µs``. A success stamped after ``now`` had not happened yet
at ``now`` (a decision asked about the past): it does not count yet, and its instant is a change
point. E without targets of this deployment passes vacuously, satisfied since always (``None``).

Sharing: one dependency environment's state depends only on the rule, the version's jobs there and
``now``, not on the environment that depends on it. ``evaluate`` takes an optional ``measure``: the
engine passes ``progress`` memoised per (rule, version, dependency environment, instant), so every
production environment reads one staging count instead of recounting it, and the success times it
counts (``success_times``, which no instant changes) once for every instant it decides at.

Combining: ``requireAll`` is AND (denied > pending > allowed), otherwise OR (allowed > pending >
denied). ``next_check_at`` is the earliest instant any E changes by time alone, and None when the
combined verdict is denied (a stale success never becomes fresh by waiting).

Must not: read a clock; look at environments of another system or at this one (the engine passes
only the others of the same system). A selector that cannot be evaluated for an environment (a
missing metadata key) does not match it, as every selector in SPEC §2; the errors are kept in the
verdict's details, and a selector that matches nothing fails closed (``NoDependencyEnvironments``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from controller.cel import Doc, checked, compile_expression
from controller.facts import ACTIVE_JOB_STATUSES, JobFact, JobStatus
from controller.rules.verdict import Status, Verdict

VARIABLES = frozenset({"environment"})
# Which per-environment status wins when they differ.
_AND_ORDER = (Status.DENIED, Status.PENDING, Status.ALLOWED)
_OR_ORDER = (Status.ALLOWED, Status.PENDING, Status.DENIED)
_TICK = timedelta(microseconds=1)  # the resolution of datetime: "strictly after" an instant


class EnvironmentProgressionSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    depends_on_environment_selector: str
    minimum_success_percentage: float = Field(default=100, ge=0, le=100, strict=True, allow_inf_nan=False)
    # Ctrlplane spells it "minimumSockTimeMinutes"; policies copied from it are accepted as written.
    minimum_soak_time_minutes: int = Field(
        default=0,
        ge=0,
        le=366 * 24 * 60,
        validation_alias=AliasChoices("minimumSoakTimeMinutes", "minimumSockTimeMinutes"),
    )
    maximum_age_hours: int | None = Field(default=None, ge=1, le=366 * 24)
    success_statuses: tuple[JobStatus, ...] = Field(default=(JobStatus.SUCCESSFUL,), min_length=1)
    require_verification_passed: bool = False
    require_all: bool = True

    @field_validator("depends_on_environment_selector")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return checked(value, VARIABLES)

    @field_validator("success_statuses")
    @classmethod
    def _finished_statuses_only(cls, value: tuple[JobStatus, ...]) -> tuple[JobStatus, ...]:
        active = [status.value for status in value if status in ACTIVE_JOB_STATUSES]
        if active:
            raise ValueError(f"successStatuses must be statuses a job ends in; {active} are still running")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _fresh_after_soak(self) -> EnvironmentProgressionSpec:
        max_age = self.maximum_age
        if max_age is not None and max_age <= self.soak:
            raise ValueError(
                "maximumAgeHours must exceed minimumSoakTimeMinutes, or no success ever qualifies"
            )
        return self

    @property
    def soak(self) -> timedelta:
        return timedelta(minutes=self.minimum_soak_time_minutes)

    @property
    def maximum_age(self) -> timedelta | None:
        return None if self.maximum_age_hours is None else timedelta(hours=self.maximum_age_hours)

    def required(self, total: int) -> int:
        """k: how many of ``total`` targets must succeed (exact arithmetic, at least one)."""
        return max(1, math.ceil(total * Fraction(str(self.minimum_success_percentage)) / 100))


@dataclass(frozen=True)
class DependencyEnvironment:
    environment: Doc
    # This deployment's release targets in the environment -> their jobs for the candidate version.
    target_jobs: Mapping[str, Sequence[JobFact]]


@dataclass(frozen=True)
class Progress:
    """One dependency environment's state at ``now``."""

    environment: Doc
    status: Status
    reason: str
    summary: str
    succeeded: int = 0
    required: int = 0
    total: int = 0
    kth_success_at: datetime | None = None
    soak_until: datetime | None = None
    stale_after: datetime | None = None
    satisfied_at: datetime | None = None
    next_check_at: datetime | None = None

    def detail(self) -> dict[str, Any]:
        return {
            "id": self.environment.data.get("id"),
            "name": _name(self.environment),
            "status": self.status.value,
            "reason": self.reason,
            "succeeded": self.succeeded,
            "required": self.required,
            "total": self.total,
            "kthSuccessAt": _iso(self.kth_success_at),
            "soakUntil": _iso(self.soak_until),
            "staleAfter": _iso(self.stale_after),
        }


Measure = Callable[[EnvironmentProgressionSpec, DependencyEnvironment, datetime], Progress]


def evaluate(
    spec: EnvironmentProgressionSpec,
    *,
    environments: Sequence[DependencyEnvironment],
    now: datetime,
    measure: Measure | None = None,
) -> Verdict:
    """``measure`` must return what ``progress`` returns (a memoised ``progress``, typically)."""
    program = compile_expression(spec.depends_on_environment_selector, VARIABLES)
    details: dict[str, Any] = {
        "expression": spec.depends_on_environment_selector,
        "requireAll": spec.require_all,
    }
    selected: list[DependencyEnvironment] = []
    errors: list[dict[str, Any]] = []
    for env in environments:
        match = program.match({"environment": env.environment})
        if match.error is not None:
            errors.append(
                {"id": env.environment.data.get("id"), "name": _name(env.environment), "error": match.error}
            )
        elif match.matched:
            selected.append(env)
    if errors:
        details["selectorErrors"] = errors
    if not selected:
        message = f"no other environment of the system matches: {spec.depends_on_environment_selector}"
        return Verdict.denied("NoDependencyEnvironments", message, details=details | {"environments": []})
    measured = sorted(((measure or progress)(spec, env, now) for env in selected), key=_order)
    return _combine(spec, measured, details | {"environments": [p.detail() for p in measured]})


def depends_on(spec: EnvironmentProgressionSpec, environment: Doc) -> bool:
    """Whether the rule reads ``environment`` (another of the system's) as a dependency: what
    ``evaluate`` selects, for a store that loads only the environments a decision reads."""
    match = compile_expression(spec.depends_on_environment_selector, VARIABLES).match({"environment": environment})
    return match.error is None and match.matched


def success_times(spec: EnvironmentProgressionSpec, env: DependencyEnvironment) -> list[datetime]:
    """When the environment's targets first succeeded, earliest first (those that never did are left
    out). What ``progress`` counts; it depends on no instant, so one list serves every instant."""
    return sorted(t for t in (_success_at(spec, jobs) for jobs in env.target_jobs.values()) if t is not None)


def progress(
    spec: EnvironmentProgressionSpec, env: DependencyEnvironment, now: datetime, times: Sequence[datetime] | None = None
) -> Progress:
    """One dependency environment's state at ``now``; ``times`` may carry its ``success_times``."""
    name, total = _name(env.environment), len(env.target_jobs)
    if total == 0:
        summary = f"{name}: no targets of this deployment, passes vacuously"
        return Progress(env.environment, Status.ALLOWED, "NoTargets", summary)
    if times is None:
        times = success_times(spec, env)
    required = spec.required(total)
    succeeded = bisect_right(times, now)  # the times are sorted
    verified = " with verification passed" if spec.require_verification_passed else ""
    counted = f"{name}: {succeeded} of {total} targets succeeded{verified}, {required} required"
    awaiting = Progress(
        env.environment, Status.PENDING, "AwaitingUpstreamSuccess", counted, succeeded, required, total
    )
    kth = times[required - 1] if len(times) >= required else None
    if kth is None or kth > now:
        state = awaiting
    else:
        state = _timed(spec, replace(awaiting, kth_success_at=kth), kth, now)
    # A success after ``now`` (a decision asked about the past) changes the counts when it happens.
    next_success = times[succeeded] if succeeded < len(times) else None
    upcoming = [at for at in (next_success, state.next_check_at) if at is not None and at > now]
    return replace(state, next_check_at=min(upcoming, default=None))


def _timed(spec: EnvironmentProgressionSpec, counted: Progress, kth: datetime, now: datetime) -> Progress:
    """Soak and maximum age, once k targets have succeeded."""
    name, soak_until = _name(counted.environment), kth + spec.soak
    stale_after = None if spec.maximum_age is None else kth + spec.maximum_age
    timed = replace(counted, soak_until=soak_until, stale_after=stale_after)
    if stale_after is not None and now > stale_after:
        summary = f"{name}: the qualifying success at {_iso(kth)} is older than {spec.maximum_age_hours} h"
        return replace(timed, status=Status.DENIED, reason="StaleUpstreamSuccess", summary=summary)
    if now < soak_until:
        summary = f"{name}: soaking until {_iso(soak_until)}"
        return replace(timed, reason="SoakTime", summary=summary, next_check_at=soak_until)
    summary = counted.summary + (f", soaked until {_iso(soak_until)}" if spec.soak else "")
    return replace(
        timed,
        status=Status.ALLOWED,
        reason="ProgressionSatisfied",
        summary=summary,
        satisfied_at=soak_until,
        next_check_at=None if stale_after is None else stale_after + _TICK,
    )


def _success_at(spec: EnvironmentProgressionSpec, jobs: Sequence[JobFact]) -> datetime | None:
    """Earliest completion of a job in a success status. A job without a completion time counts
    from its creation. When verification is required, only a passed one counts, from when it passed."""
    if not spec.require_verification_passed:
        return min((job.completed_at or job.created_at for job in jobs if job.status in spec.success_statuses),
                   default=None)
    return min(
        (
            max(job.completed_at or job.created_at, job.verified_at or job.created_at)
            for job in jobs
            if job.status in spec.success_statuses and job.verification == "passed"
        ),
        default=None,
    )


def _combine(
    spec: EnvironmentProgressionSpec, progress: Sequence[Progress], details: dict[str, Any]
) -> Verdict:
    has = {p.status for p in progress}
    status = next(s for s in (_AND_ORDER if spec.require_all else _OR_ORDER) if s in has)
    deciding = [p for p in progress if p.status == status]
    message = "; ".join(p.summary for p in deciding)
    if status == Status.DENIED:
        return Verdict.denied(deciding[0].reason, message, details=details)
    next_check_at = min((p.next_check_at for p in progress if p.next_check_at is not None), default=None)
    if status == Status.PENDING:
        return Verdict.pending(
            _pending_reason(spec, deciding), message, details=details, next_check_at=next_check_at
        )
    since = [p.satisfied_at for p in deciding]
    known = [at for at in since if at is not None]  # None: satisfied since always (no targets)
    if spec.require_all:
        satisfied_at = max(known, default=None)
    else:
        satisfied_at = None if len(known) < len(since) else min(known)
    return Verdict.allowed(
        "ProgressionSatisfied",
        message,
        details=details,
        satisfied_at=satisfied_at,
        next_check_at=next_check_at,
    )


def _pending_reason(spec: EnvironmentProgressionSpec, pending: Sequence[Progress]) -> str:
    """AND waits on the slowest kind of blocker, OR on the quickest: soak ends by time alone."""
    reasons = {p.reason for p in pending}
    if len(reasons) == 1:
        return reasons.pop()
    return "AwaitingUpstreamSuccess" if spec.require_all else "SoakTime"


def _order(progress: Progress) -> tuple[str, str]:
    return _name(progress.environment), str(progress.environment.data.get("id", ""))


def _name(doc: Doc) -> str:
    return str(doc.data.get("name") or doc.data.get("id") or "?")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")
