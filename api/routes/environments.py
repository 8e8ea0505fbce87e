from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import select

from api.deps import Reader, SessionDep, WriteCtx
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, NoNul, entity_routes, listing
from api.schemas.base import Page
from api.schemas.inventory import EnvironmentCreate, EnvironmentPublic, EnvironmentUpdate
from controller.store import inventory
from controller.store.documents import environment_doc
from controller.store.tables import EnvironmentRow

router = APIRouter(prefix="/v1/environments", tags=["environments"])


@router.get("", response_model=Page[EnvironmentPublic], operation_id="listEnvironments")
def list_environments(
    session: SessionDep,
    _: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    system_id: Annotated[str | None, Query(alias="systemId", max_length=64), NoNul] = None,
) -> Any:
    stmt = select(EnvironmentRow)
    if system_id is not None:
        stmt = stmt.where(EnvironmentRow.system_id == system_id)
    return listing(session, stmt, EnvironmentRow.id, limit, cursor, environment_doc)


@router.post("", status_code=201, response_model=EnvironmentPublic, operation_id="createEnvironment")
def create_environment(body: EnvironmentCreate, ctx: WriteCtx) -> Any:
    row = inventory.create_environment(ctx, body.model_dump())
    ctx.session.commit()
    return environment_doc(row)


entity_routes(
    router,
    entity="environment",
    row_type=EnvironmentRow,
    doc=environment_doc,
    public=EnvironmentPublic,
    update_model=EnvironmentUpdate,
    update=inventory.update_environment,
    delete=inventory.delete_environment,
)
