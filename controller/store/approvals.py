"""Approvals and break-glass overrides: the human inputs to gating.

An approval is at most one record per (version, environment, user); a later submission by the same
user replaces it, which is how a veto is lifted. Overrides carry a mandatory reason and an expiry at
most seven days out; they are revoked, never deleted, so the audit trail stays whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import select

from controller.errors import Conflict, Invalid
from controller.ids import new_id
from controller.store import triggers
from controller.store.documents import approval_doc, override_doc
from controller.store.inventory import Context
from controller.store.repo import audit
from controller.store.tables import (
    ApprovalRow,
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    OverrideRow,
    PolicyRow,
    ResourceRow,
)

MAX_OVERRIDE = timedelta(days=7)


def _reference(ctx: Context, row_type: type[Any], key: str, field: str, entity: str) -> Any:
    row = ctx.session.get(row_type, key)
    if row is None:
        raise Invalid.one(("body", field), f"{entity} {key!r} does not exist", "reference")
    return row


def _same_system(ctx: Context, version: DeploymentVersionRow, environment: EnvironmentRow) -> None:
    """A version deploys only to its own system's environments: naming another's would gate nothing."""
    deployment = ctx.session.get(DeploymentRow, version.deployment_id)
    if deployment is None or deployment.system_id != environment.system_id:
        raise Invalid.one(("body", "environmentId"), "the environment is not in the version's system")


def submit_approval(ctx: Context, version_id: str, environment_id: str, status: str, reason: str) -> ApprovalRow:
    version = _reference(ctx, DeploymentVersionRow, version_id, "versionId", "version")
    _same_system(ctx, version, _reference(ctx, EnvironmentRow, environment_id, "environmentId", "environment"))
    existing = ctx.session.exec(
        select(ApprovalRow).where(
            ApprovalRow.version_id == version_id,
            ApprovalRow.environment_id == environment_id,
            ApprovalRow.user == ctx.actor.name,
        )
    ).first()
    if existing is None:
        row = ApprovalRow(
            id=new_id(), version_id=version_id, environment_id=environment_id, user=ctx.actor.name,
            status=status, reason=reason, created_at=ctx.now, updated_at=ctx.now,
        )
        ctx.session.add(row)
        audit(ctx.session, ctx.actor, ctx.now, "create", "approval", row.id, None, approval_doc(row))
        triggers.approval_changed(ctx.session, version_id, environment_id)
        return row
    before = approval_doc(existing)
    # A replacement counts from now: an approval's age (for expiry) is that of its latest word.
    existing.status, existing.reason = status, reason
    existing.created_at = existing.updated_at = ctx.now
    ctx.session.add(existing)
    audit(ctx.session, ctx.actor, ctx.now, "update", "approval", existing.id, before, approval_doc(existing))
    triggers.approval_changed(ctx.session, version_id, environment_id)
    return existing


def create_override(ctx: Context, fields: Mapping[str, Any]) -> OverrideRow:
    version = _reference(ctx, DeploymentVersionRow, fields["version_id"], "versionId", "version")
    for key, row_type, field, entity in (
        ("environment_id", EnvironmentRow, "environmentId", "environment"),
        ("resource_id", ResourceRow, "resourceId", "resource"),
        ("policy_id", PolicyRow, "policyId", "policy"),
    ):
        if fields.get(key) is not None:
            row = _reference(ctx, row_type, fields[key], field, entity)
            if isinstance(row, EnvironmentRow):
                _same_system(ctx, version, row)
    expires_at: datetime = fields["expires_at"]
    if expires_at <= ctx.now:
        raise Invalid.one(("body", "expiresAt"), "must be in the future")
    if expires_at - ctx.now > MAX_OVERRIDE:
        raise Invalid.one(("body", "expiresAt"), "an override may last at most 7 days")
    row = OverrideRow(id=new_id(), created_by=ctx.actor.name, created_at=ctx.now, **fields)
    ctx.session.add(row)
    audit(ctx.session, ctx.actor, ctx.now, "create", "override", row.id, None, override_doc(row))
    triggers.override_changed(ctx.session, row.version_id, row.environment_id, row.resource_id)
    return row


def revoke_override(ctx: Context, row: OverrideRow) -> None:
    if row.revoked_at is not None:
        raise Conflict(("path", "id"), "the override is already revoked")
    before = override_doc(row)
    row.revoked_at, row.revoked_by = ctx.now, ctx.actor.name
    ctx.session.add(row)
    audit(ctx.session, ctx.actor, ctx.now, "revoke", "override", row.id, before, override_doc(row))
    triggers.override_changed(ctx.session, row.version_id, row.environment_id, row.resource_id)
