from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from sqlalchemy import ColumnElement, exists, func
from sqlmodel import Session, col, select

from api.deps import Reader, SessionDep, WriteCtx
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, NoNul, entity_routes, listing
from api.schemas.base import Page
from api.schemas.inventory import ResourceCreate, ResourcePublic, ResourceUpdate, UpsertSummary
from controller.errors import Invalid
from controller.store import inventory
from controller.store.documents import resource_doc
from controller.store.tables import ResourceRow

router = APIRouter(prefix="/v1/resources", tags=["resources"])
MAX_BULK = 20_000
MetadataFilter = Annotated[
    list[Annotated[str, NoNul]] | None,
    Query(description="`key:value`; repeat to require several", max_length=20),
]


def _metadata_is(session: Session, key: str, value: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "sqlite":
        # SQLite's JSON path syntax ($."key") has no escape for a '"' inside the key, so a key with
        # one is a malformed path (an OperationalError). json_each compares keys as plain values.
        pairs = func.json_each(ResourceRow.meta).table_valued("key", "value")
        return exists().select_from(pairs).where(pairs.c.key == key, pairs.c.value == value)
    equals: ColumnElement[bool] = col(ResourceRow.meta)[key].as_string() == value
    return equals


@router.get("", response_model=Page[ResourcePublic], operation_id="listResources")
def list_resources(
    session: SessionDep,
    _: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    kind: Annotated[str | None, Query(max_length=255), NoNul] = None,
    identifier: Annotated[str | None, Query(max_length=512), NoNul] = None,
    metadata: MetadataFilter = None,
) -> Any:
    stmt = select(ResourceRow)
    if kind is not None:
        stmt = stmt.where(ResourceRow.kind == kind)
    if identifier is not None:
        stmt = stmt.where(ResourceRow.identifier == identifier)
    for index, pair in enumerate(metadata or []):
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise Invalid.one(("query", "metadata", index), "expected key:value")
        stmt = stmt.where(_metadata_is(session, key, value))
    return listing(session, stmt, ResourceRow.id, limit, cursor, resource_doc)


@router.post("", status_code=201, response_model=ResourcePublic, operation_id="createResource")
def create_resource(body: ResourceCreate, ctx: WriteCtx) -> Any:
    row = inventory.create_resource(ctx, body.model_dump())
    ctx.session.commit()
    return resource_doc(row)


@router.put("", response_model=UpsertSummary, operation_id="upsertResources")
def upsert_resources(
    items: Annotated[list[ResourceCreate], Body(max_length=MAX_BULK)], ctx: WriteCtx
) -> Any:
    """Create or replace resources by identifier, all or nothing. Unchanged resources are not touched."""
    result = inventory.upsert_resources(ctx, [item.model_dump() for item in items])
    ctx.session.commit()
    return {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "targetsAdded": len(result.targets.added),
        "targetsRemoved": len(result.targets.removed),
        "items": result.docs,
    }


entity_routes(
    router,
    entity="resource",
    row_type=ResourceRow,
    doc=resource_doc,
    public=ResourcePublic,
    update_model=ResourceUpdate,
    update=inventory.update_resource,
    delete=inventory.delete_resource,
    name_field="identifier",
)
