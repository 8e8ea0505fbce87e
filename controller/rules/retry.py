"""``retry``: whether a (target, version) whose last attempts failed may get another attempt.

Why it exists: a deploy that failed is not retried forever, nor at once. This rule counts the
consecutive failed attempts of one version on one target and spaces the next attempt by a
linear or exponential backoff. Without a ``retry`` rule the engine uses ``DEFAULT_NO_RETRY``:
a failed release is not retried.

Must not: redeploy a (target, version) that already succeeded (redeploys are explicit operator
actions, not retries); look at other versions' jobs; read a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from controller.facts import ACTIVE_JOB_STATUSES, JobFact, JobStatus
from controller.rules.verdict import Verdict

# Statuses a job can end in other than success: the only ones a retry can be triggered by.
RETRYABLE_CANDIDATES = frozenset(JobStatus) - ACTIVE_JOB_STATUSES - {JobStatus.SUCCESSFUL}
_MAX_DELAY_SECONDS = 3650 * 24 * 3600  # keeps huge exponential backoffs representable


class RetrySpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    max_retries: int = Field(default=0, ge=0, le=1000)
    backoff_seconds: int = Field(default=0, ge=0)
    backoff_strategy: Literal["linear", "exponential"] = "linear"
    max_backoff_seconds: int | None = Field(default=None, ge=0)
    retry_on_statuses: tuple[JobStatus, ...] = (JobStatus.FAILURE, JobStatus.LOST)

    @field_validator("retry_on_statuses")
    @classmethod
    def _terminal_failures_only(cls, value: tuple[JobStatus, ...]) -> tuple[JobStatus, ...]:
        wrong = [status.value for status in value if status not in RETRYABLE_CANDIDATES]
        if wrong:
            allowed = ", ".join(sorted(s.value for s in RETRYABLE_CANDIDATES))
            raise ValueError(
                f"retryOnStatuses may only hold terminal non-success statuses ({allowed}); got {wrong}"
            )
        return tuple(dict.fromkeys(value))

    def backoff(self, failures: int) -> timedelta:
        """Delay before the attempt after ``failures`` consecutive retryable failures (≥ 1)."""
        if self.backoff_strategy == "linear":
            seconds = self.backoff_seconds * failures
        else:
            seconds = self.backoff_seconds * 2 ** min(failures - 1, 64)
        if self.max_backoff_seconds is not None:
            seconds = min(seconds, self.max_backoff_seconds)
        return timedelta(seconds=min(seconds, _MAX_DELAY_SECONDS))


DEFAULT_NO_RETRY = RetrySpec()


def evaluate(spec: RetrySpec, *, version_id: str, target_jobs: Sequence[JobFact], now: datetime) -> Verdict:
    jobs = sorted(
        (job for job in target_jobs if job.version_id == version_id),
        key=lambda job: (job.attempt, job.created_at, job.id),
        reverse=True,
    )
    if not jobs:
        return Verdict.allowed("FirstAttempt", "no attempt yet for this version on this target")
    if any(job.status == JobStatus.SUCCESSFUL for job in jobs):
        return Verdict.denied(
            "AlreadySucceeded", "this version already succeeded here; redeploys are explicit"
        )
    latest = jobs[0]
    details: dict[str, object] = {"latestJobId": latest.id, "latestStatus": latest.status.value}
    if latest.status in ACTIVE_JOB_STATUSES:
        return Verdict.pending(
            "AttemptInProgress", f"attempt {latest.attempt} is {latest.status.value}", details=details
        )
    failures = _consecutive_retryable(jobs, spec)
    if failures == 0:
        message = f"the last attempt ended {latest.status.value}, which this policy does not retry"
        return Verdict.denied("NotRetryable", message, details=details)
    details |= {"failures": failures, "maxRetries": spec.max_retries}
    if failures > spec.max_retries:
        message = f"{failures} failed attempt(s); at most {spec.max_retries} retries allowed"
        return Verdict.denied("RetriesExhausted", message, details=details)
    retry_at = (latest.completed_at or latest.created_at) + spec.backoff(failures)
    details["retryAt"] = retry_at.isoformat().replace("+00:00", "Z")
    if now < retry_at:
        message = f"retry {failures} of {spec.max_retries} at {details['retryAt']}"
        return Verdict.pending("RetryBackoff", message, details=details, next_check_at=retry_at)
    message = f"retry {failures} of {spec.max_retries} may start"
    return Verdict.allowed("RetryAllowed", message, details=details, satisfied_at=retry_at)


def _consecutive_retryable(newest_first: Sequence[JobFact], spec: RetrySpec) -> int:
    count = 0
    for job in newest_first:
        if job.status not in spec.retry_on_statuses:
            break
        count += 1
    return count
