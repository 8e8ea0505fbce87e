from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import select

from api.deps import Reader, SessionDep
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, listing
from api.schemas.base import Page
from api.schemas.inventory import ReleaseTargetPublic
from controller.store.documents import release_target_doc
from controller.store.repo import get_row
from controller.store.tables import ReleaseTargetRow

router = APIRouter(prefix="/v1/release-targets", tags=["release targets"])
IdFilter = Annotated[str | None, Query(max_length=64)]


@router.get("", response_model=Page[ReleaseTargetPublic], operation_id="listReleaseTargets")
def list_release_targets(
    session: SessionDep,
    _: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    deployment_id: Annotated[str | None, Query(alias="deploymentId", max_length=64)] = None,
    environment_id: Annotated[str | None, Query(alias="environmentId", max_length=64)] = None,
    resource_id: Annotated[str | None, Query(alias="resourceId", max_length=64)] = None,
) -> Any:
    stmt = select(ReleaseTargetRow)
    for column, value in (
        (ReleaseTargetRow.deployment_id, deployment_id),
        (ReleaseTargetRow.environment_id, environment_id),
        (ReleaseTargetRow.resource_id, resource_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return listing(session, stmt, ReleaseTargetRow.id, limit, cursor, release_target_doc)


@router.get("/{key}", response_model=ReleaseTargetPublic, operation_id="getReleaseTarget")
def get_release_target(key: str, session: SessionDep, _: Reader) -> Any:
    return release_target_doc(get_row(session, ReleaseTargetRow, key, "release target"))
