"""Rows as entity documents: the camelCase JSON that the API returns and CEL expressions read.

One function per entity, so the API and the selectors can never disagree about a field's name.
Timestamps stay ``datetime`` here (CEL timestamps); the API renders them as RFC 3339.
"""

from __future__ import annotations

from typing import Any

from controller.store.tables import (
    ApprovalRow,
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobAgentRow,
    JobRow,
    MeasurementRow,
    OverrideRow,
    PolicyRow,
    ReleaseTargetRow,
    ResourceRow,
    SystemRow,
    TokenRow,
    VerificationRunRow,
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


def policy_doc(row: PolicyRow) -> Document:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "selector": row.selector,
        "priority": row.priority,
        "enabled": row.enabled,
        "metadata": row.meta,
        "rules": row.rules,
        "revision": row.revision,
        **_stamps(row),
    }


def approval_doc(row: ApprovalRow) -> Document:
    return {
        "id": row.id,
        "versionId": row.version_id,
        "environmentId": row.environment_id,
        "user": row.user,
        "status": row.status,
        "reason": row.reason,
        **_stamps(row),
    }


def override_doc(row: OverrideRow) -> Document:
    return {
        "id": row.id,
        "versionId": row.version_id,
        "environmentId": row.environment_id,
        "resourceId": row.resource_id,
        "policyId": row.policy_id,
        "ruleTypes": row.rule_types,
        "reason": row.reason,
        "createdBy": row.created_by,
        "createdAt": row.created_at,
        "expiresAt": row.expires_at,
        "revokedAt": row.revoked_at,
        "revokedBy": row.revoked_by,
    }


def job_doc(row: JobRow) -> Document:
    return {
        "id": row.id,
        "releaseTargetId": row.release_target_id,
        "versionId": row.version_id,
        "jobAgentId": row.job_agent_id,
        "status": row.status,
        "attempt": row.attempt,
        "message": row.message,
        "externalId": row.external_id,
        "links": row.links,
        "reason": row.reason,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
        "startedAt": row.started_at,
        "completedAt": row.completed_at,
        "leaseExpiresAt": row.lease_expires_at,
        "verification": row.verification,
        "verifiedAt": row.verified_at,
    }


def verification_doc(row: VerificationRunRow) -> Document:
    return {
        "id": row.id,
        "jobId": row.job_id,
        "releaseTargetId": row.release_target_id,
        "versionId": row.version_id,
        "policyId": row.policy_id,
        "policyRevision": row.policy_revision,
        "ruleId": row.rule_id,
        "status": row.status,
        "message": row.message,
        "metrics": row.metrics,
        "onFailure": row.spec.get("onFailure", "none"),
        "rollbackVersionId": row.rollback_version_id,
        "resolvedBy": row.resolved_by,
        "resolvedReason": row.resolved_reason,
        "nextMeasurementAt": row.next_measurement_at,
        "startedAt": row.started_at,
        "completedAt": row.completed_at,
        "updatedAt": row.updated_at,
    }


def measurement_doc(row: MeasurementRow, metric_name: str) -> Document:
    return {
        "id": row.id,
        "metric": metric_name,
        "seq": row.seq,
        "status": row.status,
        "message": row.message,
        "result": row.result,
        "durationMs": row.duration_ms,
        "measuredAt": row.measured_at,
    }
