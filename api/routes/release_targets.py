from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime
from sqlmodel import select

from api.deps import Now, Reader, SessionDep
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, NoNul, listing
from api.schemas.base import Page
from api.schemas.inventory import ReleaseTargetPublic
from api.schemas.policy import DecisionPublic
from controller.decision import decide, document
from controller.errors import Invalid
from controller.snapshot import Snapshot
from controller.store import verifications
from controller.store.documents import release_target_doc, verification_doc
from controller.store.facts import load_snapshot
from controller.store.repo import get_row
from controller.store.tables import ReleaseTargetRow

router = APIRouter(prefix="/v1/release-targets", tags=["release targets"])
IdFilter = Annotated[str | None, Query(max_length=64), NoNul]


@router.get("", response_model=Page[ReleaseTargetPublic], operation_id="listReleaseTargets")
def list_release_targets(
    session: SessionDep,
    _: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    deployment_id: Annotated[str | None, Query(alias="deploymentId", max_length=64), NoNul] = None,
    environment_id: Annotated[str | None, Query(alias="environmentId", max_length=64), NoNul] = None,
    resource_id: Annotated[str | None, Query(alias="resourceId", max_length=64), NoNul] = None,
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


@router.get("/{key}/decision", response_model=DecisionPublic, operation_id="explainDecision")
def explain(
    key: str,
    session: SessionDep,
    _: Reader,
    now: Now,
    version: Annotated[str | None, Query(max_length=255, description="a version id or tag")] = None,
    at: Annotated[AwareDatetime | None, Query(description="evaluate as of this instant (default now)")] = None,
) -> Any:
    """Why is this target blocked, and when will it go? Every candidate's verdicts, as of `at`."""
    target = get_row(session, ReleaseTargetRow, key, "release target")
    snapshot = load_snapshot(session, [target.id])
    version_id = _version_id(snapshot, target.deployment_id, version) if version is not None else None
    explained = document(decide(snapshot, target.id, (at or now).astimezone(UTC), version_id=version_id))
    current = snapshot.current_job(target.id)
    if current is not None:
        runs = verifications.for_job(session, current.id)
        explained["verification"] = {
            "jobId": current.id, "versionId": current.version_id, "status": current.verification,
            "verifiedAt": current.verified_at, "runs": [verification_doc(r) for r in runs],
        }
    return explained


def _version_id(snapshot: Snapshot, deployment_id: str, key: str) -> str:
    for candidate in snapshot.versions.get(deployment_id, ()):
        if key in (candidate.id, candidate.tag):
            return candidate.id
    raise Invalid.one(("query", "version"), f"no version {key!r} in this target's deployment")


@router.get("/{key}", response_model=ReleaseTargetPublic, operation_id="getReleaseTarget")
def get_release_target(key: str, session: SessionDep, _: Reader) -> Any:
    return release_target_doc(get_row(session, ReleaseTargetRow, key, "release target"))
