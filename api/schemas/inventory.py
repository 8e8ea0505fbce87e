"""Inventory schemas: systems, resources, environments, deployments, versions and job agents."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from api.schemas.base import (
    Body,
    JsonObject,
    Metadata,
    Name,
    Patch,
    Public,
    ResourceSelector,
    Schema,
    Slug,
    Text,
    UtcDatetime,
)

VersionStatus = Literal["building", "ready", "failed", "rejected", "paused"]


class SystemCreate(Body):
    name: Name
    description: Text = ""
    metadata: Metadata = Field(default_factory=dict)


class SystemUpdate(Patch):
    name: Name | None = None
    description: Text | None = None
    metadata: Metadata | None = None


class SystemPublic(Public):
    name: str
    description: str
    metadata: dict[str, str]


class ResourceCreate(Body):
    identifier: Name
    name: Name
    kind: Name
    version: Name = "v1"
    metadata: Metadata = Field(default_factory=dict)
    config: JsonObject = Field(default_factory=dict)


class ResourceUpdate(Patch):
    identifier: Name | None = None
    name: Name | None = None
    kind: Name | None = None
    version: Name | None = None
    metadata: Metadata | None = None
    config: JsonObject | None = None


class ResourcePublic(Public):
    identifier: str
    name: str
    kind: str
    version: str
    metadata: dict[str, str]
    config: JsonObject


class EnvironmentCreate(Body):
    system_id: str
    name: Name
    description: Text = ""
    metadata: Metadata = Field(default_factory=dict)
    resource_selector: ResourceSelector | None = None


class EnvironmentUpdate(Patch):
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"resource_selector"})
    name: Name | None = None
    description: Text | None = None
    metadata: Metadata | None = None
    resource_selector: ResourceSelector | None = None


class EnvironmentPublic(Public):
    system_id: str
    name: str
    description: str
    metadata: dict[str, str]
    resource_selector: str | None


class DeploymentCreate(Body):
    system_id: str
    name: Name
    slug: Slug
    description: Text = ""
    metadata: Metadata = Field(default_factory=dict)
    resource_selector: ResourceSelector | None = None
    job_agent_id: str | None = None
    job_agent_config: JsonObject = Field(default_factory=dict)


class DeploymentUpdate(Patch):
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"resource_selector", "job_agent_id"})
    name: Name | None = None
    slug: Slug | None = None
    description: Text | None = None
    metadata: Metadata | None = None
    resource_selector: ResourceSelector | None = None
    job_agent_id: str | None = None
    job_agent_config: JsonObject | None = None


class DeploymentPublic(Public):
    system_id: str
    name: str
    slug: str
    description: str
    metadata: dict[str, str]
    resource_selector: str | None
    job_agent_id: str | None
    job_agent_config: JsonObject


class VersionCreate(Body):
    tag: Name
    name: Name | None = None
    config: JsonObject = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)
    status: VersionStatus = "ready"
    message: Text = ""
    created_at: UtcDatetime | None = None
    created_by: Name | None = None


class VersionUpdate(Patch):
    status: VersionStatus | None = None
    message: Text | None = None
    metadata: Metadata | None = None


class VersionPublic(Public):
    deployment_id: str
    tag: str
    name: str
    config: JsonObject
    metadata: dict[str, str]
    status: VersionStatus
    message: str
    created_by: str | None


class JobAgentCreate(Body):
    name: Name
    type: Literal["pull"] = "pull"
    config: JsonObject = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)


class JobAgentUpdate(Patch):
    name: Name | None = None
    config: JsonObject | None = None
    metadata: Metadata | None = None


class JobAgentPublic(Public):
    name: str
    type: str
    config: JsonObject
    metadata: dict[str, str]


class ReleaseTargetPublic(Schema):
    id: str
    resource_id: str
    environment_id: str
    deployment_id: str
    created_at: datetime


class UpsertSummary(Schema):
    created: int
    updated: int
    unchanged: int
    targets_added: int
    targets_removed: int
    items: list[ResourcePublic]
