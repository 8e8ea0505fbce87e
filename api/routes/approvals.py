"""Approvals (approver or admin) and break-glass overrides (operator or admin)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from api.deps import Now, Reader, SessionDep, WriteCtx, require
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, NoNul, listing
from api.schemas.base import Page
from api.schemas.policy import (
    ApprovalCreate,
    ApprovalPublic,
    OverrideCreate,
    OverridePublic,
    PendingApproval,
)
from controller.auth import Capability, Principal
from controller.store.approvals import create_override, revoke_override, submit_approval
from controller.store.documents import approval_doc, override_doc
from controller.store.inventory import Context
from controller.store.pending import pending_approvals
from controller.store.repo import get_row
from controller.store.tables import ApprovalRow, OverrideRow

approvals = APIRouter(prefix="/v1/approvals", tags=["approvals"])
overrides = APIRouter(prefix="/v1/overrides", tags=["overrides"])
Approver = Annotated[Principal, Depends(require(Capability.APPROVE))]
IdFilter = Annotated[str | None, Query(max_length=64), NoNul]


@approvals.post("", status_code=201, response_model=ApprovalPublic, operation_id="submitApproval")
def submit(body: ApprovalCreate, session: SessionDep, approver: Approver, at: Now) -> Any:
    """Approve or reject a version for an environment, as the caller. A later submission replaces it."""
    try:
        row = submit_approval(Context(session, approver, at), body.version_id, body.environment_id, body.status,
                              body.reason)
        session.commit()
    except IntegrityError:
        # The same user's concurrent submission created the record first (it is one per version,
        # environment and user): this one replaces it, as a later submission does.
        session.rollback()
        row = submit_approval(Context(session, approver, at), body.version_id, body.environment_id, body.status,
                              body.reason)
        session.commit()
    return approval_doc(row)


@approvals.get("", operation_id="listApprovals", response_model=Page[ApprovalPublic] | Page[PendingApproval])
def list_approvals(
    session: SessionDep,
    caller: Reader,
    at: Now,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    pending: bool = False,
    version_id: Annotated[str | None, Query(alias="versionId", max_length=64), NoNul] = None,
    environment_id: Annotated[str | None, Query(alias="environmentId", max_length=64), NoNul] = None,
) -> Any:
    """Records; or, with `pending=true`, the (version, environment) pairs awaiting the caller, with k/N."""
    if pending:
        items = [
            {
                "versionId": p.version.id,
                "versionTag": p.version.tag,
                "deploymentId": p.version.deployment_id,
                "environmentId": p.environment.id,
                "environmentName": p.environment.name,
                "approved": p.approved,
                "required": p.required,
                "approvers": p.approvers,
                "rejectedBy": p.rejected_by,
                "policies": sorted(p.policies),
                "targets": p.targets,
            }
            for p in pending_approvals(session, caller.name, at)
            if (version_id is None or p.version.id == version_id)
            and (environment_id is None or p.environment.id == environment_id)
        ]
        return {"items": items[:limit], "nextCursor": None}
    stmt = select(ApprovalRow)
    if version_id is not None:
        stmt = stmt.where(ApprovalRow.version_id == version_id)
    if environment_id is not None:
        stmt = stmt.where(ApprovalRow.environment_id == environment_id)
    return listing(session, stmt, ApprovalRow.id, limit, cursor, approval_doc)


@overrides.post("", status_code=201, response_model=OverridePublic, operation_id="createOverride")
def create(body: OverrideCreate, ctx: WriteCtx) -> Any:
    """Break-glass: the named gates count as allowed until `expiresAt` (at most 7 days). Audited."""
    row = create_override(ctx, body.model_dump())
    ctx.session.commit()
    return override_doc(row)


@overrides.get("", response_model=Page[OverridePublic], operation_id="listOverrides")
def list_overrides(
    session: SessionDep,
    _: Reader,
    at: Now,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    version_id: Annotated[str | None, Query(alias="versionId", max_length=64), NoNul] = None,
    active: bool | None = None,
) -> Any:
    stmt = select(OverrideRow)
    if version_id is not None:
        stmt = stmt.where(OverrideRow.version_id == version_id)
    if active is True:
        stmt = stmt.where(col(OverrideRow.revoked_at).is_(None), OverrideRow.expires_at > at)
    return listing(session, stmt, OverrideRow.id, limit, cursor, override_doc)


@overrides.get("/{key}", response_model=OverridePublic, operation_id="getOverride")
def get_override(key: str, session: SessionDep, _: Reader) -> Any:
    return override_doc(get_row(session, OverrideRow, key, "override"))


@overrides.delete("/{key}", status_code=204, operation_id="revokeOverride")
def revoke(key: str, ctx: WriteCtx) -> Response:
    revoke_override(ctx, get_row(ctx.session, OverrideRow, key, "override"))
    ctx.session.commit()
    return Response(status_code=204)
