from typing import Any

from fastapi import APIRouter, Response
from sqlmodel import select

from api.deps import Reader, SessionDep, WriteCtx
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, listing
from api.schemas.base import Page
from api.schemas.policy import PolicyCreate, PolicyPublic, PolicyRevisionPublic, PolicyUpdate
from controller.errors import NotFound
from controller.store.documents import policy_doc
from controller.store.policies import create_policy, delete_policy, update_policy
from controller.store.repo import get_row
from controller.store.tables import PolicyRevisionRow, PolicyRow

router = APIRouter(prefix="/v1/policies", tags=["policies"])


def _load(session: Any, key: str) -> PolicyRow:
    return get_row(session, PolicyRow, key, "policy", name_field="name")


@router.get("", response_model=Page[PolicyPublic], operation_id="listPolicies")
def list_policies(session: SessionDep, _: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    return listing(session, select(PolicyRow), PolicyRow.id, limit, cursor, policy_doc)


@router.post("", status_code=201, response_model=PolicyPublic, operation_id="createPolicy")
def create(body: PolicyCreate, ctx: WriteCtx) -> Any:
    """Every CEL string, rrule, timezone and range is checked now: a 422 names the rule index and field."""
    row = create_policy(ctx, body.model_dump())
    ctx.session.commit()
    return policy_doc(row)


@router.get("/{key}", response_model=PolicyPublic, operation_id="getPolicy")
def get_policy(key: str, session: SessionDep, _: Reader) -> Any:
    return policy_doc(_load(session, key))


@router.put("/{key}", response_model=PolicyPublic, operation_id="replacePolicy")
def replace_policy(key: str, body: PolicyCreate, ctx: WriteCtx, response: Response) -> Any:
    """Replace the whole policy (a new revision). Addressed by name and absent: created (201)."""
    fields = body.model_dump()
    try:
        row = _load(ctx.session, key)
    except NotFound:
        if body.name != key:
            raise
        row = create_policy(ctx, fields)
        response.status_code = 201
    else:
        row = update_policy(ctx, row, fields)
    ctx.session.commit()
    return policy_doc(row)


@router.patch("/{key}", response_model=PolicyPublic, operation_id="updatePolicy")
def patch_policy(key: str, body: PolicyUpdate, ctx: WriteCtx) -> Any:
    row = update_policy(ctx, _load(ctx.session, key), body.changes())
    ctx.session.commit()
    return policy_doc(row)


@router.delete("/{key}", status_code=204, operation_id="deletePolicy")
def delete(key: str, ctx: WriteCtx) -> Response:
    delete_policy(ctx, _load(ctx.session, key))
    ctx.session.commit()
    return Response(status_code=204)


@router.get("/{key}/revisions", response_model=Page[PolicyRevisionPublic], operation_id="listPolicyRevisions")
def revisions(key: str, session: SessionDep, _: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    """Every revision, oldest first; still readable after the policy is deleted (by id)."""
    try:
        policy_id = _load(session, key).id
    except NotFound:
        if session.exec(select(PolicyRevisionRow).where(PolicyRevisionRow.policy_id == key)).first() is None:
            raise
        policy_id = key
    stmt = select(PolicyRevisionRow).where(PolicyRevisionRow.policy_id == policy_id)
    return listing(session, stmt, PolicyRevisionRow.id, limit, cursor, _revision_doc)


def _revision_doc(row: PolicyRevisionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "policyId": row.policy_id,
        "revision": row.revision,
        "action": row.action,
        "document": row.document,
        "createdBy": row.created_by,
        "createdAt": row.created_at,
    }
