"""versionCooldown: the reference job, the cooldown, and its exact end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from controller.facts import JobFact, JobStatus
from controller.rules.verdict import Status
from controller.rules.version_cooldown import VersionCooldownSpec, evaluate

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SPEC = VersionCooldownSpec(interval_seconds=3600)


def job(version_id: str, status: JobStatus, created_at: datetime, attempt: int = 1) -> JobFact:
    return JobFact(
        id=f"job-{version_id}-{attempt}-{status}",
        target_id="t1",
        version_id=version_id,
        status=status,
        attempt=attempt,
        created_at=created_at,
    )


V1_DEPLOYED = job("v1", JobStatus.SUCCESSFUL, T0)
V2_RUNNING = job("v2", JobStatus.IN_PROGRESS, T0 + HOUR)


@pytest.mark.parametrize(
    ("jobs", "candidate", "now", "status", "reason", "satisfied_at", "next_check_at"),
    [
        ([], "v2", T0, Status.ALLOWED, "NoPriorDeploy", None, None),
        ([job("v1", JobStatus.FAILURE, T0)], "v2", T0, Status.ALLOWED, "NoPriorDeploy", None, None),
        ([V1_DEPLOYED], "v1", T0, Status.ALLOWED, "SameVersion", None, None),
        ([V1_DEPLOYED], "v2", T0 + timedelta(minutes=10), Status.PENDING, "VersionCooldown", None, T0 + HOUR),
        (
            [V1_DEPLOYED],
            "v2",
            T0 + HOUR - timedelta(microseconds=1),
            Status.PENDING,
            "VersionCooldown",
            None,
            T0 + HOUR,
        ),
        ([V1_DEPLOYED], "v2", T0 + HOUR, Status.ALLOWED, "CooldownElapsed", T0 + HOUR, None),
        # The newest active job is the reference, not the older success.
        ([V1_DEPLOYED, V2_RUNNING], "v3", T0 + HOUR, Status.PENDING, "VersionCooldown", None, T0 + 2 * HOUR),
        ([V1_DEPLOYED, V2_RUNNING], "v2", T0 + HOUR, Status.ALLOWED, "SameVersion", None, None),
        # A newer failed or cancelled job is not a reference.
        (
            [V1_DEPLOYED, job("v2", JobStatus.FAILURE, T0 + HOUR)],
            "v2",
            T0 + HOUR,
            Status.ALLOWED,
            "CooldownElapsed",
            T0 + HOUR,
            None,
        ),
        (
            [V1_DEPLOYED, job("v3", JobStatus.CANCELLED, T0 + HOUR)],
            "v1",
            T0 + HOUR,
            Status.ALLOWED,
            "SameVersion",
            None,
            None,
        ),
    ],
)
def test_cooldown(
    jobs: list[JobFact],
    candidate: str,
    now: datetime,
    status: Status,
    reason: str,
    satisfied_at: datetime | None,
    next_check_at: datetime | None,
) -> None:
    verdict = evaluate(SPEC, candidate_version_id=candidate, target_jobs=jobs, now=now)
    assert (verdict.status, verdict.reason) == (status, reason)
    assert (verdict.satisfied_at, verdict.next_check_at) == (satisfied_at, next_check_at)


def test_zero_interval_allows_at_once() -> None:
    verdict = evaluate(
        VersionCooldownSpec(interval_seconds=0), candidate_version_id="v2", target_jobs=[V1_DEPLOYED], now=T0
    )
    assert (verdict.status, verdict.satisfied_at) == (Status.ALLOWED, T0)


@pytest.mark.parametrize("fields", [{"intervalSeconds": -1}, {}, {"intervalSeconds": 5, "other": 1}])
def test_invalid_specs_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VersionCooldownSpec.model_validate(fields)
