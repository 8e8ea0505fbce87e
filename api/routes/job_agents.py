from typing import Any

from fastapi import APIRouter
from sqlmodel import select

from api.deps import Reader, SessionDep, WriteCtx
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, entity_routes, listing
from api.schemas.base import Page
from api.schemas.inventory import JobAgentCreate, JobAgentPublic, JobAgentUpdate
from controller.store import inventory
from controller.store.documents import job_agent_doc
from controller.store.tables import JobAgentRow

router = APIRouter(prefix="/v1/job-agents", tags=["job agents"])


@router.get("", response_model=Page[JobAgentPublic], operation_id="listJobAgents")
def list_job_agents(session: SessionDep, _: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Any:
    return listing(session, select(JobAgentRow), JobAgentRow.id, limit, cursor, job_agent_doc)


@router.post("", status_code=201, response_model=JobAgentPublic, operation_id="createJobAgent")
def create_job_agent(body: JobAgentCreate, ctx: WriteCtx) -> Any:
    row = inventory.create_job_agent(ctx, body.model_dump())
    ctx.session.commit()
    return job_agent_doc(row)


entity_routes(
    router,
    entity="jobAgent",
    row_type=JobAgentRow,
    doc=job_agent_doc,
    public=JobAgentPublic,
    update_model=JobAgentUpdate,
    update=inventory.update_job_agent,
    delete=inventory.delete_job_agent,
    name_field="name",
)
