"""Jobs for pull agents, the go/no-go gate, redeploys and the decision log."""

import math
import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime
from sqlmodel import col, select

from api.deps import Now, Reader, SessionDep, WriteCtx, get_principal
from api.routes.crud import DEFAULT_LIMIT, Cursor, Limit, NoNul, listing, seq_listing
from api.schemas.base import Page
from api.schemas.jobs import (
    DecisionLogPublic,
    GateRequest,
    GateResponse,
    JobContext,
    JobPublic,
    JobStatusName,
    JobUpdate,
    RedeployRequestBody,
)
from api.schemas.policy import DecisionPublic
from controller.auth import Capability, Principal, Role
from controller.decision import Outcome, decide, document
from controller.errors import Forbidden
from controller.store import jobs as job_store
from controller.store.documents import job_doc
from controller.store.facts import load_snapshot
from controller.store.gate import gate as run_gate
from controller.store.gate import request_redeploy, resolve_target, resolve_version
from controller.store.inventory import Context
from controller.store.repo import get_row
from controller.store.tables import DecisionRow, JobAgentRow, JobRow, ReleaseTargetRow


async def _gate_started(request: Request) -> None:
    """A router dependency runs before the route's own (authentication included): the gate's latency
    metric covers the whole handling. ``async``: a sync one would cost a worker-thread hop."""
    request.state.gate_started = time.perf_counter()


jobs = APIRouter(prefix="/v1/jobs", tags=["jobs"])
agents = APIRouter(prefix="/v1/job-agents", tags=["job agents"])
gate = APIRouter(prefix="/v1/gate", tags=["gate"], dependencies=[Depends(_gate_started)])
targets = APIRouter(prefix="/v1/release-targets", tags=["release targets"])
decisions = APIRouter(prefix="/v1/decisions", tags=["decisions"])
Caller = Annotated[Principal, Depends(get_principal)]
DEFAULT_RETRY_AFTER = 30


def lease(request: Request) -> timedelta:
    return timedelta(seconds=request.app.state.settings.job_lease_seconds)


def _agent_or(principal: Principal, capability: Capability) -> None:
    if principal.role is not Role.AGENT and not principal.can(capability):
        raise Forbidden(f"role {principal.role.value!r} may not do this")


def _job(ctx_session: Any, key: str, principal: Principal) -> JobRow:
    job: JobRow = get_row(ctx_session, JobRow, key, "job")
    job_store.check_access(job, principal)
    return job


@agents.get("/{key}/jobs", response_model=Page[JobPublic], operation_id="listAgentJobs")
def agent_jobs(
    key: str, session: SessionDep, caller: Caller, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
    status: JobStatusName | None = None,
) -> Any:
    """The agent's jobs, oldest first (`status=pending` for work to claim)."""
    agent = get_row(session, JobAgentRow, key, "jobAgent", name_field="name")
    if caller.role is Role.AGENT:
        if caller.job_agent_id != agent.id:
            raise Forbidden("an agent token reaches only its own job agent")
    elif not caller.can(Capability.READ):
        raise Forbidden("may not read jobs")
    stmt = select(JobRow).where(JobRow.job_agent_id == agent.id)
    if status is not None:
        stmt = stmt.where(JobRow.status == status)
    return listing(session, stmt, JobRow.id, limit, cursor, job_doc)


@jobs.get("/{key}", response_model=JobContext, operation_id="getJob")
def get_job(key: str, session: SessionDep, caller: Caller) -> Any:
    _agent_or(caller, Capability.READ)
    return job_store.context(session, _job(session, key, caller))


@jobs.post("/{key}/claim", response_model=JobContext, operation_id="claimJob")
def claim(key: str, request: Request, session: SessionDep, caller: Caller, at: Now) -> Any:
    """Atomically take a pending job (→ inProgress) with its full context. A second claim gets 409."""
    _agent_or(caller, Capability.WRITE)
    job = job_store.claim(Context(session, caller, at), _job(session, key, caller), lease(request))
    body = job_store.context(session, job)
    session.commit()
    return body


@jobs.post("/{key}/heartbeat", response_model=JobPublic, operation_id="heartbeatJob")
def heartbeat(key: str, request: Request, session: SessionDep, caller: Caller, at: Now) -> Any:
    """Extend the lease; a running job whose lease lapses becomes `lost`."""
    _agent_or(caller, Capability.WRITE)
    job = job_store.heartbeat(Context(session, caller, at), _job(session, key, caller), lease(request))
    session.commit()
    return job_doc(job)


@jobs.patch("/{key}", response_model=JobPublic, operation_id="updateJob")
def update_job(key: str, body: JobUpdate, request: Request, session: SessionDep, caller: Caller, at: Now) -> Any:
    _agent_or(caller, Capability.WRITE)
    ctx = Context(session, caller, at)
    job = job_store.report(ctx, _job(session, key, caller), body.model_dump(exclude_unset=True), lease(request))
    session.commit()
    return job_doc(job)


@gate.post("", response_model=GateResponse, operation_id="gate")
def go_no_go(body: GateRequest, request: Request, response: Response, session: SessionDep, caller: Caller,
             at: Now) -> Any:
    """Ask before deploying. `go` creates an inProgress job for the caller; `wait` says when to ask again."""
    _agent_or(caller, Capability.WRITE)
    target = resolve_target(session, body.deployment, body.environment, body.resource)
    version = resolve_version(session, target.deployment_id, body.version)
    result = run_gate(Context(session, caller, at), target, version, lease(request))
    session.commit()  # before the answer is built: a `go` holds the write lock (SQLite) until here
    decision = result.decision
    answer: dict[str, Any] = {
        "outcome": decision.outcome.value,
        "reason": decision.reason,
        "message": decision.message,
        "eligibleAt": decision.eligible_at,
        "reasons": _reasons(decision),
        "decision": document(decision),
        "job": job_store.context(session, result.job) if result.job is not None else None,
    }
    if decision.outcome is Outcome.WAIT:
        hint = decision.eligible_at or decision.next_evaluation_at
        seconds = max(1, math.ceil((hint - at).total_seconds())) if hint else DEFAULT_RETRY_AFTER
        answer["retryAfterSeconds"] = seconds
        response.headers["Retry-After"] = str(seconds)
    request.app.state.metrics.gate_answered(decision.outcome.value, time.perf_counter() - request.state.gate_started)
    return answer


def _reasons(decision: Any) -> list[str]:
    focus = decision.focus
    verdicts = [*(focus.verdicts if focus else ()), *decision.job_verdicts]
    found = [f"{rv.rule_type}: {rv.verdict.reason}: {rv.verdict.message}" for rv in verdicts
             if rv.blocking and rv.verdict.status.value != "allowed"]
    return found or [f"{decision.reason}: {decision.message}"]


@targets.post("/{key}/redeploy", response_model=DecisionPublic, status_code=202, operation_id="redeploy")
def redeploy(key: str, body: RedeployRequestBody, ctx: WriteCtx) -> Any:
    """Redeploy the current version, or roll back to one that succeeded here before. Every gate still
    applies (only no-downgrade is waived); the loop creates the job once they allow. Audited."""
    target = request_redeploy(ctx, get_row(ctx.session, ReleaseTargetRow, key, "release target"), body.version,
                              body.reason)
    decision = decide(load_snapshot(ctx.session, [target.id]), target.id, ctx.now)
    ctx.session.commit()
    return document(decision)


@decisions.get("", response_model=Page[DecisionLogPublic], operation_id="listDecisions")
def list_decisions(
    session: SessionDep,
    _: Reader,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    release_target_id: Annotated[str | None, Query(alias="releaseTargetId", max_length=64), NoNul] = None,
    deployment_id: Annotated[str | None, Query(alias="deploymentId", max_length=64), NoNul] = None,
    environment_id: Annotated[str | None, Query(alias="environmentId", max_length=64), NoNul] = None,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
) -> Any:
    """The decision log, oldest first: one entry whenever a target's outcome or reasons changed."""
    stmt = select(DecisionRow)
    for column, value in ((DecisionRow.release_target_id, release_target_id),
                          (DecisionRow.deployment_id, deployment_id), (DecisionRow.environment_id, environment_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(DecisionRow.evaluated_at >= since)
    if until is not None:
        stmt = stmt.where(DecisionRow.evaluated_at < until)
    return seq_listing(session, stmt, col(DecisionRow.seq), limit, cursor, _decision_doc)


def _decision_doc(row: DecisionRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "decisionId": row.decision_id,
        "releaseTargetId": row.release_target_id,
        "deploymentId": row.deployment_id,
        "environmentId": row.environment_id,
        "versionId": row.version_id,
        "outcome": row.outcome,
        "reason": row.reason,
        "evaluatedAt": row.evaluated_at,
        "policyRevisions": row.policy_revisions,
        "document": row.document,
    }
