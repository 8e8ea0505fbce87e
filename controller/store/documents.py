"""Rows as entity documents: the camelCase JSON that the API returns and CEL expressions read.

One function per entity, so the API and the selectors can never disagree about a field's name.
Timestamps stay ``datetime`` here (CEL timestamps); the API renders them as RFC 3339.
"""

from __future__ import annotations

from typing import Any

from controller.store.tables import (
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobAgentRow,
    ReleaseTargetRow,
    ResourceRow,
    SystemRow,
    TokenRow,
)

Document = dict[str, Any]


def _stamps(row: Any) -> Document:
    return {"createdAt": row.created_at, "updatedAt": row.updated_at}


def system_doc(row: SystemRow) -> Document:
    return {"id": row.id, "name": row.name, "description": row.description, "metadata": row.meta, **_stamps(row)}


def resource_doc(row: ResourceRow) -> Document:
    return {
        "id": row.id,
        "identifier": row.identifier,
        "name": row.name,
        "kind": row.kind,
        "version": row.version,
        "metadata": row.meta,
        "config": row.config,
        **_stamps(row),
    }


def environment_doc(row: EnvironmentRow) -> Document:
    return {
        "id": row.id,
        "systemId": row.system_id,
        "name": row.name,
        "description": row.description,
        "metadata": row.meta,
        "resourceSelector": row.resource_selector,
        **_stamps(row),
    }


def deployment_doc(row: DeploymentRow) -> Document:
    return {
        "id": row.id,
        "systemId": row.system_id,
        "name": row.name,
        "slug": row.slug,
        "description": row.description,
        "metadata": row.meta,
        "resourceSelector": row.resource_selector,
        "jobAgentId": row.job_agent_id,
        "jobAgentConfig": row.job_agent_config,
        **_stamps(row),
    }


def version_doc(row: DeploymentVersionRow) -> Document:
    return {
        "id": row.id,
        "deploymentId": row.deployment_id,
        "tag": row.tag,
        "name": row.name,
        "config": row.config,
        "metadata": row.meta,
        "status": row.status,
        "message": row.message,
        "createdBy": row.created_by,
        **_stamps(row),
    }


def job_agent_doc(row: JobAgentRow) -> Document:
    return {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "config": row.config,
        "metadata": row.meta,
        **_stamps(row),
    }


def release_target_doc(row: ReleaseTargetRow) -> Document:
    return {
        "id": row.id,
        "resourceId": row.resource_id,
        "environmentId": row.environment_id,
        "deploymentId": row.deployment_id,
        "createdAt": row.created_at,
    }


def token_doc(row: TokenRow) -> Document:
    """Never includes the secret or its hash."""
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "jobAgentId": row.job_agent_id,
        "createdAt": row.created_at,
        "revokedAt": row.revoked_at,
    }
