from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import select

from api.deps import Reader, SessionDep, WriteCtx
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, NoNul, entity_routes, listing
from api.schemas.base import Page
from api.schemas.inventory import (
    DeploymentCreate,
    DeploymentPublic,
    DeploymentUpdate,
    VersionCreate,
    VersionPublic,
    VersionUpdate,
)
from controller.store import inventory
from controller.store.documents import deployment_doc, version_doc
from controller.store.repo import get_row
from controller.store.tables import DeploymentRow, DeploymentVersionRow

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])
versions = APIRouter(prefix="/v1/versions", tags=["versions"])


@router.get("", response_model=Page[DeploymentPublic], operation_id="listDeployments")
def list_deployments(
    session: SessionDep,
    _: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    system_id: Annotated[str | None, Query(alias="systemId", max_length=64), NoNul] = None,
) -> Any:
    stmt = select(DeploymentRow)
    if system_id is not None:
        stmt = stmt.where(DeploymentRow.system_id == system_id)
    return listing(session, stmt, DeploymentRow.id, limit, cursor, deployment_doc)


@router.post("", status_code=201, response_model=DeploymentPublic, operation_id="createDeployment")
def create_deployment(body: DeploymentCreate, ctx: WriteCtx) -> Any:
    row = inventory.create_deployment(ctx, body.model_dump())
    ctx.session.commit()
    return deployment_doc(row)


@router.get("/{key}/versions", response_model=Page[VersionPublic], operation_id="listVersions")
def list_versions(
    key: str, session: SessionDep, _: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Any:
    deployment = get_row(session, DeploymentRow, key, "deployment")
    stmt = select(DeploymentVersionRow).where(DeploymentVersionRow.deployment_id == deployment.id)
    return listing(session, stmt, DeploymentVersionRow.id, limit, cursor, version_doc)


@router.post("/{key}/versions", status_code=201, response_model=VersionPublic, operation_id="createVersion")
def create_version(key: str, body: VersionCreate, ctx: WriteCtx) -> Any:
    deployment = get_row(ctx.session, DeploymentRow, key, "deployment")
    row = inventory.create_version(ctx, deployment, body.model_dump())
    ctx.session.commit()
    return version_doc(row)


entity_routes(
    router,
    entity="deployment",
    row_type=DeploymentRow,
    doc=deployment_doc,
    public=DeploymentPublic,
    update_model=DeploymentUpdate,
    update=inventory.update_deployment,
    delete=inventory.delete_deployment,
)
entity_routes(
    versions,
    entity="version",
    row_type=DeploymentVersionRow,
    doc=version_doc,
    public=VersionPublic,
    update_model=VersionUpdate,
    update=inventory.update_version,
    delete=None,
)
