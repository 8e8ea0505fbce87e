"""Policies, approvals, overrides and decision explanations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints
from pydantic_core import PydanticCustomError

from api.schemas.base import Body, Metadata, Name, Patch, Public, Schema, Selector, Text
from api.schemas.verification import VerificationPublic
from controller.rules.registry import RULE_TYPES

Priority = Field(default=0, ge=-1_000_000, le=1_000_000)
Rules: list[dict[str, Any]] = Field(
    default_factory=list, max_length=100, description="Rule objects, each holding one rule-type key"
)


class PolicyCreate(Body):
    name: Name
    description: Text = ""
    selector: Selector = Field(default="true", description="CEL over environment, resource, deployment")
    priority: int = Priority
    enabled: bool = True
    metadata: Metadata = Field(default_factory=dict)
    rules: list[dict[str, Any]] = Rules
    # Ctrlplane exports carry these; accepted so its policy files load unchanged, and ignored.
    id: str | None = Field(default=None, exclude=True, description="ignored (server-generated)")
    created_at: str | None = Field(default=None, exclude=True, description="ignored")
    workspace_id: str | None = Field(default=None, exclude=True, description="ignored")


class PolicyUpdate(Patch):
    name: Name | None = None
    description: Text | None = None
    selector: Selector | None = None
    priority: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    enabled: bool | None = None
    metadata: Metadata | None = None
    rules: list[dict[str, Any]] | None = Field(default=None, max_length=100)


class PolicyPublic(Public):
    name: str
    description: str
    selector: str
    priority: int
    enabled: bool
    metadata: dict[str, str]
    rules: list[dict[str, Any]]
    revision: int


class PolicyRevisionPublic(Schema):
    id: str
    policy_id: str
    revision: int
    action: str
    document: dict[str, Any]
    created_by: str
    created_at: datetime


class ApprovalCreate(Body):
    version_id: str = Field(max_length=64)
    environment_id: str = Field(max_length=64)
    status: Literal["approved", "rejected"] = "approved"
    reason: Text = ""


class ApprovalPublic(Public):
    version_id: str
    environment_id: str
    user: str
    status: str
    reason: str


class PendingApproval(Schema):
    version_id: str
    version_tag: str
    deployment_id: str
    environment_id: str
    environment_name: str
    approved: int
    required: int
    approvers: list[str]
    rejected_by: list[str]
    policies: list[str]
    targets: int


def _gating_rule_type(value: str) -> str:
    """An override opens gates: a name that is no gate would make it cover nothing, silently."""
    gates = [key for key, kind in RULE_TYPES.items() if not kind.effect]
    if value not in gates:
        raise PydanticCustomError("unknown_rule_type", "{value!r} is not a gating rule type (known: {known})",
                                  {"value": value, "known": ", ".join(gates)})
    return value


class OverrideCreate(Body):
    version_id: str = Field(max_length=64)
    environment_id: str | None = Field(default=None, max_length=64)
    resource_id: str | None = Field(default=None, max_length=64)
    policy_id: str | None = Field(default=None, max_length=64)
    rule_types: list[Annotated[str, AfterValidator(_gating_rule_type)]] | None = Field(
        default=None, min_length=1, max_length=20, description="omit to override every gate")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096)]
    expires_at: AwareDatetime


class OverridePublic(Schema):
    id: str
    version_id: str
    environment_id: str | None
    resource_id: str | None
    policy_id: str | None
    rule_types: list[str] | None
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None


class VerdictPublic(Schema):
    policy_id: str | None
    policy_name: str | None
    policy_revision: int | None
    rule_id: str | None
    rule_type: str
    status: Literal["allowed", "pending", "denied"]
    enforcement: Literal["block", "warn"]
    reason: str
    message: str
    details: dict[str, Any]
    satisfied_at: datetime | None
    next_check_at: datetime | None


class VersionRef(Schema):
    id: str
    tag: str


class CandidatePublic(Schema):
    version: VersionRef
    outcome: Literal["allowed", "pending", "denied"]
    verdicts: list[VerdictPublic]


class CurrentVerification(Schema):
    job_id: str
    version_id: str
    status: Literal["running", "passed", "failed", "inconclusive"] | None
    verified_at: datetime | None
    runs: list[VerificationPublic]


class DecisionPublic(Schema):
    decision_id: str
    release_target_id: str
    evaluated_at: datetime
    outcome: Literal["go", "wait", "no-go"]
    reason: str
    message: str
    desired_version: VersionRef | None
    current_version: VersionRef | None
    eligible_at: datetime | None
    waiting_for: list[str]
    next_evaluation_at: datetime | None
    warnings: list[VerdictPublic]
    candidates: list[CandidatePublic]
    job_eligibility: list[VerdictPublic]
    policies: list[dict[str, Any]]
    overridden_rules: list[dict[str, Any]]
    verification: CurrentVerification | None = Field(
        default=None, description="the current version's verification runs (as they stand now, whatever `at`)")
