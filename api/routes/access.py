"""Tokens (admin only) and the audit log."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlmodel import col, select

from api.deps import Admin, AdminCtx, Reader, SessionDep
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, NoNul, listing, seq_listing
from api.schemas.access import AuditPublic, TokenCreate, TokenCreated, TokenPublic
from api.schemas.base import Page, UtcDatetime
from controller.store.documents import token_doc
from controller.store.repo import get_row
from controller.store.tables import AuditRow, TokenRow
from controller.store.tokens import create_token, revoke_token

tokens = APIRouter(prefix="/v1/tokens", tags=["tokens"])
audit = APIRouter(prefix="/v1/audit", tags=["audit"])


@tokens.get("", response_model=Page[TokenPublic], operation_id="listTokens")
def list_tokens(session: SessionDep, _: Admin, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    return listing(session, select(TokenRow), TokenRow.id, limit, cursor, token_doc)


@tokens.post("", status_code=201, response_model=TokenCreated, operation_id="createToken")
def create(body: TokenCreate, ctx: AdminCtx) -> Any:
    """The secret is in this response only; it is stored hashed."""
    row, secret = create_token(ctx, body.name, body.role, body.job_agent_id)
    ctx.session.commit()
    return {**token_doc(row), "token": secret}


@tokens.delete("/{key}", status_code=204, operation_id="revokeToken")
def revoke(key: str, ctx: AdminCtx) -> Response:
    revoke_token(ctx, get_row(ctx.session, TokenRow, key, "token"))
    ctx.session.commit()
    return Response(status_code=204)


def _audit_doc(row: AuditRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at,
        "actor": row.actor,
        "actorRole": row.actor_role,
        "action": row.action,
        "entityType": row.entity_type,
        "entityId": row.entity_id,
        "before": row.before,
        "after": row.after,
    }


@audit.get("", response_model=Page[AuditPublic], operation_id="listAudit")
def list_audit(
    session: SessionDep,
    _: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    entity_type: Annotated[str | None, Query(alias="entityType", max_length=64), NoNul] = None,
    entity_id: Annotated[str | None, Query(alias="entityId", max_length=64), NoNul] = None,
    actor: Annotated[str | None, Query(max_length=255), NoNul] = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
) -> Any:
    """Oldest first; page with `cursor`."""
    stmt = select(AuditRow)
    filters = ((AuditRow.entity_type, entity_type), (AuditRow.entity_id, entity_id), (AuditRow.actor, actor))
    for column, value in filters:
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(AuditRow.at >= since)
    if until is not None:
        stmt = stmt.where(AuditRow.at < until)
    return seq_listing(session, stmt, col(AuditRow.seq), limit, cursor, _audit_doc)

