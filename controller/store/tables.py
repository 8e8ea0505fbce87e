"""Database tables (``*Row``), the only schema the store and migrations know.

These are persistence shapes, not API schemas: the API has its own ``*Create``/``*Public`` models.
``metadata`` is reserved by SQLModel, so the column named ``metadata`` is the attribute ``meta``.
JSON columns are JSONB on PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")


def json_column(name: str, *, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(name, JSONType, nullable=nullable))


def fk(
    target: str, *, nullable: bool = False, ondelete: Literal["CASCADE", "SET NULL", "RESTRICT"] | None = None
) -> Any:
    # SQLModel's stubs omit None for ondelete, though it treats None exactly as "not given".
    return Field(
        default=None,
        foreign_key=target,
        nullable=nullable,
        index=True,
        ondelete=ondelete,  # type: ignore[arg-type]
    )


class SystemRow(SQLModel, table=True):
    __tablename__ = "system"
    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(sa_column=Column(String(255), nullable=False, unique=True))
    description: str = ""
    meta: dict[str, str] = json_column("metadata")
    # Bumped on every change: caches of derived values key on (id, revision).
    revision: int = 1
    created_at: datetime
    updated_at: datetime


class ResourceRow(SQLModel, table=True):
    __tablename__ = "resource"
    id: str = Field(primary_key=True, max_length=36)
    identifier: str = Field(sa_column=Column(String(512), nullable=False, unique=True))
    name: str
    kind: str = Field(index=True)
    version: str
    meta: dict[str, str] = json_column("metadata")
    config: dict[str, Any] = json_column("config")
    # Bumped on every change: caches of derived values key on (id, revision).
    revision: int = 1
    created_at: datetime
    updated_at: datetime


class EnvironmentRow(SQLModel, table=True):
    __tablename__ = "environment"
    __table_args__ = (UniqueConstraint("system_id", "name"),)
    id: str = Field(primary_key=True, max_length=36)
    system_id: str = fk("system.id")
    name: str
    description: str = ""
    meta: dict[str, str] = json_column("metadata")
    resource_selector: str | None = None
    # Bumped on every change: caches of derived values key on (id, revision).
    revision: int = 1
    created_at: datetime
    updated_at: datetime


class JobAgentRow(SQLModel, table=True):
    __tablename__ = "job_agent"
    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(sa_column=Column(String(255), nullable=False, unique=True))
    type: str = "pull"
    config: dict[str, Any] = json_column("config")
    meta: dict[str, str] = json_column("metadata")
    # Bumped on every change: caches of derived values key on (id, revision).
    revision: int = 1
    created_at: datetime
    updated_at: datetime


class DeploymentRow(SQLModel, table=True):
    __tablename__ = "deployment"
    __table_args__ = (UniqueConstraint("system_id", "slug"),)
    id: str = Field(primary_key=True, max_length=36)
    system_id: str = fk("system.id")
    name: str
    slug: str
    description: str = ""
    meta: dict[str, str] = json_column("metadata")
    resource_selector: str | None = None
    job_agent_id: str | None = fk("job_agent.id", nullable=True, ondelete="SET NULL")
    job_agent_config: dict[str, Any] = json_column("job_agent_config")
    # Bumped on every change: caches of derived values key on (id, revision).
    revision: int = 1
    created_at: datetime
    updated_at: datetime


class DeploymentVersionRow(SQLModel, table=True):
    __tablename__ = "deployment_version"
    __table_args__ = (
        UniqueConstraint("deployment_id", "tag"),
        Index("ix_deployment_version_deployment_created", "deployment_id", "created_at"),
    )
    id: str = Field(primary_key=True, max_length=36)
    deployment_id: str = fk("deployment.id", ondelete="CASCADE")
    tag: str
    name: str
    config: dict[str, Any] = json_column("config")
    meta: dict[str, str] = json_column("metadata")
    status: str = "ready"
    message: str = ""
    created_by: str | None = None
    # Bumped on every change: caches of derived values key on (id, revision).
    revision: int = 1
    created_at: datetime
    updated_at: datetime


class ReleaseTargetRow(SQLModel, table=True):
    """Derived: exists iff the resource matches both selectors and env and deployment share a system."""

    __tablename__ = "release_target"
    __table_args__ = (UniqueConstraint("resource_id", "environment_id", "deployment_id"),)
    id: str = Field(primary_key=True, max_length=36)
    resource_id: str = fk("resource.id", ondelete="CASCADE")
    environment_id: str = fk("environment.id", ondelete="CASCADE")
    deployment_id: str = fk("deployment.id", ondelete="CASCADE")
    created_at: datetime
    # Durable triggers: an event bumps dirty_generation; a pass records the generation it saw. A
    # trigger that lands during a pass leaves dirty > evaluated, so it is never lost.
    dirty_generation: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    evaluated_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_evaluation_at: datetime | None = Field(default=None, index=True)
    # Serialises gate calls, redeploys and passes on one target: every writer bumps it first.
    lock_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    last_decision_key: str | None = None
    # An operator's explicit redeploy or rollback, honoured by the loop once the gates allow.
    requested_version_id: str | None = Field(default=None, max_length=36)
    requested_by: str | None = None
    requested_reason: str | None = None
    requested_at: datetime | None = None


class DeploymentTriggerRow(SQLModel, table=True):
    """A deferred trigger: every target of the deployment is to be marked dirty by the next pass.

    Written when a deployment's target set changes (its progression counts and rollout orders move),
    in the writer's transaction, so the write itself stays cheap however many targets it fans out to.
    Rows are deleted by id once expanded; a later trigger for the same deployment is a new row.
    """

    __tablename__ = "deployment_trigger"
    id: str = Field(primary_key=True, max_length=36)
    deployment_id: str = Field(max_length=36, index=True)
    created_at: datetime


class DecisionRow(SQLModel, table=True):
    """The decision log: appended whenever a target's outcome, desired version or reasons change."""

    __tablename__ = "decision_log"
    __table_args__ = (
        Index("ix_decision_target_at", "release_target_id", "evaluated_at"),
        Index("ix_decision_deployment_env_at", "deployment_id", "environment_id", "evaluated_at"),
    )
    seq: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    )
    decision_id: str = Field(max_length=36)
    release_target_id: str = Field(max_length=36)
    deployment_id: str = Field(max_length=36)
    environment_id: str = Field(max_length=36)
    version_id: str | None = Field(default=None, max_length=36)
    outcome: str
    reason: str
    evaluated_at: datetime
    policy_revisions: dict[str, int] = json_column("policy_revisions")
    document: dict[str, Any] = json_column("document")


class TokenRow(SQLModel, table=True):
    __tablename__ = "api_token"
    id: str = Field(primary_key=True, max_length=36)
    name: str
    role: str
    job_agent_id: str | None = fk("job_agent.id", nullable=True, ondelete="CASCADE")
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: datetime
    revoked_at: datetime | None = None


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_entity", "entity_type", "entity_id"),)
    # SQLite only autoincrements an INTEGER primary key.
    seq: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    )
    at: datetime = Field(index=True)
    actor: str
    actor_role: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None = json_column("before", nullable=True)
    after: dict[str, Any] | None = json_column("after", nullable=True)


class PolicyRow(SQLModel, table=True):
    __tablename__ = "policy"
    id: str = Field(primary_key=True, max_length=36)
    name: str = Field(sa_column=Column(String(255), nullable=False, unique=True))
    description: str = ""
    selector: str = "true"
    priority: int = 0
    enabled: bool = True
    meta: dict[str, str] = json_column("metadata")
    rules: list[dict[str, Any]] = json_column("rules")
    revision: int = 1
    created_at: datetime
    updated_at: datetime


class PolicyRevisionRow(SQLModel, table=True):
    """Every policy write, kept readable after later writes and after deletion (no foreign key)."""

    __tablename__ = "policy_revision"
    __table_args__ = (UniqueConstraint("policy_id", "revision"),)
    id: str = Field(primary_key=True, max_length=36)
    policy_id: str = Field(index=True, max_length=36)
    revision: int
    action: str
    document: dict[str, Any] = json_column("document")
    created_by: str
    created_at: datetime


class ApprovalRow(SQLModel, table=True):
    __tablename__ = "approval"
    __table_args__ = (
        UniqueConstraint("version_id", "environment_id", "user"),
        Index("ix_approval_version_environment", "version_id", "environment_id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    version_id: str = Field(foreign_key="deployment_version.id", ondelete="CASCADE")
    environment_id: str = Field(foreign_key="environment.id", ondelete="CASCADE")
    user: str
    status: str
    reason: str = ""
    created_at: datetime
    updated_at: datetime


class OverrideRow(SQLModel, table=True):
    __tablename__ = "override"
    id: str = Field(primary_key=True, max_length=36)
    version_id: str = fk("deployment_version.id", ondelete="CASCADE")
    environment_id: str | None = fk("environment.id", nullable=True, ondelete="CASCADE")
    resource_id: str | None = fk("resource.id", nullable=True, ondelete="CASCADE")
    policy_id: str | None = Field(default=None, max_length=36)
    rule_types: list[str] | None = json_column("rule_types", nullable=True)
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime = Field(index=True)
    revoked_at: datetime | None = None
    revoked_by: str | None = None


class JobRow(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (
        # The last line of defence against double deploys, whatever the interleaving.
        UniqueConstraint("release_target_id", "version_id", "attempt"),
        Index("ix_job_target_created", "release_target_id", "created_at"),
        Index("ix_job_version", "version_id"),
        Index("ix_job_agent_status", "job_agent_id", "status"),
    )
    id: str = Field(primary_key=True, max_length=36)
    release_target_id: str = Field(foreign_key="release_target.id", ondelete="CASCADE")
    version_id: str = Field(foreign_key="deployment_version.id", ondelete="CASCADE")
    job_agent_id: str | None = fk("job_agent.id", nullable=True, ondelete="SET NULL")
    status: str = "pending"
    attempt: int = 1
    message: str = ""
    external_id: str | None = None
    links: dict[str, str] = json_column("links")
    config: dict[str, Any] = json_column("config")
    reason: str = "policy"  # policy | gate | redeploy | rollback
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    lease_expires_at: datetime | None = None
    # The worst status of the job's verification runs (None: none ran) and when they all passed;
    # kept here so decisions read it with the job, without a join.
    verification: str | None = None
    verified_at: datetime | None = None


class VerificationRunRow(SQLModel, table=True):
    """One verification rule measuring one successful job (SPEC §7)."""

    __tablename__ = "verification_run"
    __table_args__ = (
        # A job is verified once per rule, however many controllers see it succeed.
        UniqueConstraint("job_id", "policy_id", "rule_id"),
        Index("ix_verification_run_due", "status", "next_measurement_at"),
    )
    id: str = Field(primary_key=True, max_length=36)
    job_id: str = Field(foreign_key="job.id", ondelete="CASCADE", index=True)
    release_target_id: str = Field(foreign_key="release_target.id", ondelete="CASCADE", index=True)
    version_id: str = Field(foreign_key="deployment_version.id", ondelete="CASCADE")
    policy_id: str = Field(max_length=36)
    policy_revision: int
    rule_id: str = Field(max_length=128)
    spec: dict[str, Any] = json_column("spec")
    # The target's entities as the templates see them, frozen when the run starts.
    context: dict[str, Any] = json_column("context")
    status: str = "running"  # running | passed | failed | inconclusive
    message: str = ""
    metrics: list[dict[str, Any]] = json_column("metrics")
    next_measurement_at: datetime | None = None
    # Held by the controller taking a measurement, so another one skips the run until it expires.
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    resolved_by: str | None = None
    resolved_reason: str | None = None
    rollback_version_id: str | None = None
    started_at: datetime
    completed_at: datetime | None = None
    updated_at: datetime


class MeasurementRow(SQLModel, table=True):
    __tablename__ = "verification_measurement"
    __table_args__ = (
        # The n-th measurement of a metric is recorded once: a restart can neither skip nor repeat one.
        UniqueConstraint("run_id", "metric", "seq"),
    )
    id: str = Field(primary_key=True, max_length=36)
    run_id: str = Field(foreign_key="verification_run.id", ondelete="CASCADE", index=True)
    metric: int
    seq: int
    status: str  # passed | failed | inconclusive | error
    message: str = ""
    result: dict[str, Any] | None = json_column("result", nullable=True)
    duration_ms: int = 0
    measured_at: datetime
