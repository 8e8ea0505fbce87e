"""Verification runs and their measurements, and a person's resolution of an inconclusive run."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from api.schemas.base import Body, Schema, Text

RunStatusName = Literal["running", "passed", "failed", "inconclusive"]


class MetricSummary(Schema):
    name: str
    status: RunStatusName
    message: str
    taken: int
    passed: int
    failed: int
    inconclusive: int
    errors: int
    next_measurement_at: datetime | None


class MeasurementPublic(Schema):
    id: str
    metric: str
    seq: int = Field(description="0 for a metric's first measurement")
    status: Literal["passed", "failed", "inconclusive", "error"]
    message: str
    result: dict[str, Any] | None = Field(description="what the provider returned (large bodies cut)")
    duration_ms: int
    measured_at: datetime


class VerificationPublic(Schema):
    id: str
    job_id: str
    release_target_id: str
    version_id: str
    policy_id: str
    policy_revision: int
    rule_id: str
    status: RunStatusName
    message: str
    metrics: list[MetricSummary]
    on_failure: Literal["none", "rollback"]
    rollback_version_id: str | None
    resolved_by: str | None
    resolved_reason: str | None
    next_measurement_at: datetime | None
    started_at: datetime
    completed_at: datetime | None
    updated_at: datetime


class VerificationDetail(VerificationPublic):
    measurements: list[MeasurementPublic]


class VerificationResolve(Body):
    status: Literal["passed", "failed"]
    reason: Text = Field(min_length=1)
