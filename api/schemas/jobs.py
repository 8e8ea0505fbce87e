"""Jobs, the gate, redeploys and the decision log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from api.schemas.base import Body, Name, Schema, Text
from api.schemas.policy import DecisionPublic

JobStatusName = Literal[
    "pending", "inProgress", "actionRequired", "successful", "failure", "cancelled", "skipped", "invalidJobAgent",
    "lost",
]


class JobPublic(Schema):
    id: str
    release_target_id: str
    version_id: str
    job_agent_id: str | None
    status: JobStatusName
    attempt: int
    message: str
    external_id: str | None
    links: dict[str, str]
    reason: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    lease_expires_at: datetime | None
    verification: Literal["running", "passed", "failed", "inconclusive"] | None = None
    verified_at: datetime | None = None


class JobContext(JobPublic):
    config: dict[str, Any]
    release_target: dict[str, Any]
    resource: dict[str, Any]
    environment: dict[str, Any]
    deployment: dict[str, Any]
    version: dict[str, Any]


class JobUpdate(Body):
    status: JobStatusName | None = None
    message: Text | None = None
    external_id: Name | None = None
    links: dict[Name, Text] | None = Field(default=None, max_length=50)


class GateRequest(Body):
    deployment: Name = Field(description="deployment id, or slug")
    environment: Name = Field(description="environment id, or name (in the deployment's system)")
    resource: Name = Field(description="resource id, or identifier")
    version: Name = Field(description="version id, or tag")


class GateResponse(Schema):
    outcome: Literal["go", "wait", "no-go"]
    reason: str
    message: str
    retry_after_seconds: int | None = None
    eligible_at: datetime | None = None
    reasons: list[str] = Field(default_factory=list)
    job: JobContext | None = None
    decision: DecisionPublic


class RedeployRequestBody(Body):
    version: Name | None = Field(default=None, description="version id or tag; default: the current version")
    reason: Text = Field(min_length=1)


class DecisionLogPublic(Schema):
    seq: int
    decision_id: str
    release_target_id: str
    deployment_id: str
    environment_id: str
    version_id: str | None
    outcome: str
    reason: str
    evaluated_at: datetime
    policy_revisions: dict[str, int]
    document: dict[str, Any]
