from typing import Any

from fastapi import APIRouter
from sqlmodel import select

from api.deps import Reader, SessionDep, WriteCtx
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, entity_routes, listing
from api.schemas.base import Page
from api.schemas.inventory import SystemCreate, SystemPublic, SystemUpdate
from controller.store import inventory
from controller.store.documents import system_doc
from controller.store.tables import SystemRow

router = APIRouter(prefix="/v1/systems", tags=["systems"])


@router.get("", response_model=Page[SystemPublic], operation_id="listSystems")
def list_systems(session: SessionDep, _: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    return listing(session, select(SystemRow), SystemRow.id, limit, cursor, system_doc)


@router.post("", status_code=201, response_model=SystemPublic, operation_id="createSystem")
def create_system(body: SystemCreate, ctx: WriteCtx) -> Any:
    row = inventory.create_system(ctx, body.model_dump())
    ctx.session.commit()
    return system_doc(row)


entity_routes(
    router,
    entity="system",
    row_type=SystemRow,
    doc=system_doc,
    public=SystemPublic,
    update_model=SystemUpdate,
    update=inventory.update_system,
    delete=inventory.delete_system,
    name_field="name",
)
