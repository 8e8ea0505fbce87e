"""Verification runs: list them, read one with every measurement, resolve an inconclusive one."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.deps import Now, Reader, SessionDep, require
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, NoNul, listing
from api.schemas.base import Page
from api.schemas.verification import VerificationDetail, VerificationPublic, VerificationResolve
from controller.auth import Capability, Principal
from controller.store import verifications
from controller.store.documents import verification_doc
from controller.store.inventory import Context
from controller.store.repo import get_row
from controller.store.tables import VerificationRunRow

router = APIRouter(prefix="/v1/verifications", tags=["verifications"])
Resolver = Annotated[Principal, Depends(require(Capability.WRITE, Capability.APPROVE))]
IdFilter = Annotated[str | None, Query(max_length=64), NoNul]


@router.get("", response_model=Page[VerificationPublic], operation_id="listVerifications")
def list_runs(
    session: SessionDep,
    _: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    job_id: Annotated[str | None, Query(alias="jobId", max_length=64), NoNul] = None,
    release_target_id: Annotated[str | None, Query(alias="releaseTargetId", max_length=64), NoNul] = None,
    status: Annotated[str | None, Query(pattern="^(running|passed|failed|inconclusive)$")] = None,
) -> Any:
    stmt = verifications.query(job_id=job_id, release_target_id=release_target_id, status=status)
    return listing(session, stmt, VerificationRunRow.id, limit, cursor, verification_doc)


@router.get("/{key}", response_model=VerificationDetail, operation_id="getVerification")
def get_run(key: str, session: SessionDep, _: Reader) -> Any:
    run = get_row(session, VerificationRunRow, key, "verification")
    return verifications.document(session, run, with_measurements=True)


@router.post("/{key}/resolve", response_model=VerificationDetail, operation_id="resolveVerification")
def resolve(key: str, body: VerificationResolve, session: SessionDep, resolver: Resolver, at: Now) -> Any:
    """Mark an inconclusive run passed or failed (operator, approver or admin). Audited; a failure
    under `onFailure: rollback` queues the rollback."""
    run = get_row(session, VerificationRunRow, key, "verification")
    verifications.resolve(Context(session, resolver, at), run, body.status, body.reason)
    session.commit()
    return verifications.document(session, run, with_measurements=True)
