"""``versionCooldown``: a minimum time between deploy starts of different versions on a target.

Why it exists: a deployment that releases often should not churn a target through every version;
once a version started deploying, a newer one waits ``intervalSeconds`` from that start.

Must not: look at other targets, read a clock, or hold back the version that is already the
reference (re-evaluating the running or deployed version must stay allowed).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from controller.facts import ACTIVE_JOB_STATUSES, JobFact, JobStatus
from controller.rules.verdict import Verdict

_REFERENCE_STATUSES = ACTIVE_JOB_STATUSES | {JobStatus.SUCCESSFUL}


class VersionCooldownSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    interval_seconds: int = Field(ge=0, le=366 * 24 * 3600)

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.interval_seconds)


def evaluate(
    spec: VersionCooldownSpec, *, candidate_version_id: str, target_jobs: Sequence[JobFact], now: datetime
) -> Verdict:
    reference = _reference(target_jobs)
    if reference is None:
        return Verdict.allowed("NoPriorDeploy", "no earlier deploy on this target")
    details = {"referenceVersionId": reference.version_id, "referenceJobId": reference.id}
    if reference.version_id == candidate_version_id:
        return Verdict.allowed("SameVersion", "this version is the target's latest deploy", details=details)
    ready_at = reference.created_at + spec.interval
    details["cooldownEndsAt"] = ready_at.isoformat().replace("+00:00", "Z")
    if now < ready_at:
        message = f"cooling down after the last deploy started; ready at {details['cooldownEndsAt']}"
        return Verdict.pending("VersionCooldown", message, details=details, next_check_at=ready_at)
    return Verdict.allowed(
        "CooldownElapsed", "the cooldown has elapsed", details=details, satisfied_at=ready_at
    )


def _reference(jobs: Sequence[JobFact]) -> JobFact | None:
    """The latest (by created_at) job that is active or successful."""
    candidates = [job for job in jobs if job.status in _REFERENCE_STATUSES]
    return max(candidates, key=lambda job: (job.created_at, job.attempt, job.id), default=None)
