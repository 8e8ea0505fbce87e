"""retry: consecutive failures, linear and exponential backoff with a cap, and the terminal cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from controller.facts import JobFact, JobStatus
from controller.rules.retry import DEFAULT_NO_RETRY, RetrySpec, evaluate
from controller.rules.verdict import Status

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
S = timedelta(seconds=1)
LINEAR = RetrySpec(max_retries=3, backoff_seconds=60)
EXPONENTIAL = RetrySpec(
    max_retries=5, backoff_seconds=60, backoff_strategy="exponential", max_backoff_seconds=200
)


def attempts(*statuses: JobStatus, version_id: str = "v1") -> list[JobFact]:
    """Attempts 1..n, each created a minute apart and completed at T0 + (n-1) minutes for the last."""
    n = len(statuses)
    return [
        JobFact(
            id=f"{version_id}-{i}",
            target_id="t1",
            version_id=version_id,
            status=status,
            attempt=i,
            created_at=T0 - timedelta(minutes=n - i) - 30 * S,
            completed_at=None if status.active else T0 - timedelta(minutes=n - i),
        )
        for i, status in enumerate(statuses, start=1)
    ]


F, L, OK, C = JobStatus.FAILURE, JobStatus.LOST, JobStatus.SUCCESSFUL, JobStatus.CANCELLED


@pytest.mark.parametrize(
    ("spec", "jobs", "now", "status", "reason", "next_check_at"),
    [
        (LINEAR, [], T0, Status.ALLOWED, "FirstAttempt", None),
        (LINEAR, attempts(F), T0, Status.PENDING, "RetryBackoff", T0 + 60 * S),  # b·1
        (LINEAR, attempts(F, L), T0, Status.PENDING, "RetryBackoff", T0 + 120 * S),  # b·2, lost counts
        (LINEAR, attempts(F, F, F), T0 + 179 * S, Status.PENDING, "RetryBackoff", T0 + 180 * S),
        (LINEAR, attempts(F, F, F), T0 + 180 * S, Status.ALLOWED, "RetryAllowed", None),
        (LINEAR, attempts(F, F, F, F), T0 + timedelta(days=1), Status.DENIED, "RetriesExhausted", None),
        (EXPONENTIAL, attempts(F), T0, Status.PENDING, "RetryBackoff", T0 + 60 * S),  # b·2⁰
        (EXPONENTIAL, attempts(F, F), T0, Status.PENDING, "RetryBackoff", T0 + 120 * S),  # b·2¹
        (EXPONENTIAL, attempts(F, F, F), T0, Status.PENDING, "RetryBackoff", T0 + 200 * S),  # 240, capped
        (EXPONENTIAL, attempts(F, F, F, F, F), T0, Status.PENDING, "RetryBackoff", T0 + 200 * S),
        (EXPONENTIAL, attempts(F, F, F, F, F, F), T0, Status.DENIED, "RetriesExhausted", None),
        # A success is never retried, even after later failed redeploys.
        (LINEAR, attempts(OK), T0, Status.DENIED, "AlreadySucceeded", None),
        (LINEAR, attempts(OK, F), T0, Status.DENIED, "AlreadySucceeded", None),
        # Only the consecutive latest failures count; a cancel ends the streak.
        (LINEAR, attempts(C), T0, Status.DENIED, "NotRetryable", None),
        (LINEAR, attempts(F, F, C, F), T0, Status.PENDING, "RetryBackoff", T0 + 60 * S),
        (LINEAR, attempts(F, JobStatus.IN_PROGRESS), T0, Status.PENDING, "AttemptInProgress", None),
        # Without a retry rule a failed release is not retried.
        (DEFAULT_NO_RETRY, attempts(F), T0 + timedelta(days=1), Status.DENIED, "RetriesExhausted", None),
        (DEFAULT_NO_RETRY, [], T0, Status.ALLOWED, "FirstAttempt", None),
        # Other versions' jobs are not this version's attempts.
        (LINEAR, attempts(F, F, F, F, version_id="v0"), T0, Status.ALLOWED, "FirstAttempt", None),
    ],
)
def test_retry(
    spec: RetrySpec,
    jobs: list[JobFact],
    now: datetime,
    status: Status,
    reason: str,
    next_check_at: datetime | None,
) -> None:
    verdict = evaluate(spec, version_id="v1", target_jobs=jobs, now=now)
    assert (verdict.status, verdict.reason, verdict.next_check_at) == (status, reason, next_check_at)


def test_allowed_retry_is_satisfied_when_the_backoff_ended() -> None:
    verdict = evaluate(LINEAR, version_id="v1", target_jobs=attempts(F, F), now=T0 + timedelta(hours=1))
    assert (verdict.status, verdict.satisfied_at) == (Status.ALLOWED, T0 + 120 * S)
    assert verdict.details["failures"] == 2


def test_order_is_by_attempt_not_input_order() -> None:
    jobs = list(reversed(attempts(C, F)))
    assert evaluate(LINEAR, version_id="v1", target_jobs=jobs, now=T0).reason == "RetryBackoff"


def test_a_job_lost_without_completion_backs_off_from_its_creation() -> None:
    lost = JobFact(id="j", target_id="t1", version_id="v1", status=L, attempt=1, created_at=T0)
    assert evaluate(LINEAR, version_id="v1", target_jobs=[lost], now=T0).next_check_at == T0 + 60 * S


def test_retry_on_other_statuses() -> None:
    spec = RetrySpec.model_validate({"maxRetries": 1, "retryOnStatuses": ["cancelled"]})
    assert evaluate(spec, version_id="v1", target_jobs=attempts(C), now=T0).reason == "RetryAllowed"
    assert evaluate(spec, version_id="v1", target_jobs=attempts(F), now=T0).reason == "NotRetryable"


def test_huge_exponential_backoff_stays_representable() -> None:
    spec = RetrySpec(max_retries=1000, backoff_seconds=10**6, backoff_strategy="exponential")
    verdict = evaluate(spec, version_id="v1", target_jobs=attempts(*[F] * 200), now=T0)
    assert verdict.next_check_at is not None and verdict.next_check_at > T0 + timedelta(days=3000)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"retryOnStatuses": ["successful"]}, "terminal non-success"),
        ({"retryOnStatuses": ["inProgress"]}, "terminal non-success"),
        ({"retryOnStatuses": ["bogus"]}, "retryOnStatuses"),
        ({"maxRetries": -1}, "maxRetries"),
        ({"backoffSeconds": -5}, "backoffSeconds"),
        ({"backoffStrategy": "fibonacci"}, "backoffStrategy"),
        ({"maxBackoffSeconds": -1}, "maxBackoffSeconds"),
        ({"retries": 3}, "Extra inputs"),
    ],
)
def test_invalid_specs_are_rejected(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RetrySpec.model_validate(fields)


def test_defaults() -> None:
    assert RetrySpec.model_validate({}).model_dump(by_alias=True, mode="json") == {
        "maxRetries": 0,
        "backoffSeconds": 0,
        "backoffStrategy": "linear",
        "maxBackoffSeconds": None,
        "retryOnStatuses": ["failure", "lost"],
    }
