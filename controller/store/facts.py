"""Loads a ``Snapshot``: every fact the decision engine reads, for a set of focus targets.

Focus targets get their full job history. Of the rest, a partial focus (an explain, a gate call, a
batch) loads only what the rules matching its targets read (``decision.reads``): its deployment's
targets in an environment a gradualRollout orders (their ids) or a progression rule counts (with
their jobs for the versions the focus targets may still move to), and, under a deploymentDependency
rule, other deployments' targets on the focus resources with their successful jobs (their current
versions). Everything is fetched in a handful of set-based queries, whatever the number of targets.

Cost matters here: deciding a deployment of thousands of targets should take about a second, load
included, and a gate call loads one target's facts on every call. So bulk rows (targets, jobs,
resource revisions, approvals, overrides) are read as Core column tuples, not ORM objects, through
statements built once; timestamps are parsed here to what ``UTCDateTime`` returns, without its
per-value hook. When the focus is every target of its deployments (a full pass), the sets derived
from it are subqueries on the deployment instead of id lists.

Must not: decide anything, or write.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from itertools import chain
from typing import Any, TypeVar

from sqlalchemy import String, bindparam, func, type_coerce
from sqlmodel import Session, col, select

from controller.cel import Doc
from controller.decision import Reads, policy_projection, reads
from controller.facts import (
    ApprovalFact,
    ApprovalStatus,
    JobFact,
    JobStatus,
    TargetFact,
    VersionFact,
    VersionStatus,
)
from controller.policy import Policy
from controller.rules.deployment_dependency import DeploymentDependencySpec
from controller.snapshot import OverrideFact, RedeployRequest, Snapshot, current_job
from controller.store.doc_cache import cached, cached_doc
from controller.store.documents import deployment_doc, environment_doc, resource_doc, version_doc
from controller.store.policies import load_policies
from controller.store.tables import (
    ApprovalRow,
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobAgentRow,
    JobRow,
    OverrideRow,
    ReleaseTargetRow,
    ResourceRow,
)

CHUNK = 2000
K = TypeVar("K")
V = TypeVar("V")
_STATUSES = {status.value: status for status in JobStatus}
T, J = ReleaseTargetRow, JobRow


def _instant(column: Any) -> Any:
    """A timestamp column read raw: text on SQLite, an aware datetime from PostgreSQL's driver."""
    return type_coerce(column, String)


_TARGET_COLUMNS: tuple[Any, ...] = (T.id, T.resource_id, T.environment_id, T.deployment_id)
_FOCUS_COLUMNS: tuple[Any, ...] = (*_TARGET_COLUMNS, T.requested_version_id, T.requested_by, T.requested_reason,
                  _instant(T.requested_at))
_JOB_COLUMNS: tuple[Any, ...] = (J.id, J.release_target_id, J.version_id, J.status, J.attempt, _instant(J.created_at),
                _instant(J.completed_at), J.verification, _instant(J.verified_at))


def _utc(value: str | datetime | None) -> datetime | None:
    """What ``UTCDateTime`` returns, at a fraction of its cost per value. SQLite stores UTC as ISO
    text without an offset (``UTCDateTime`` binds UTC); drivers with time zones give datetimes."""
    if value is None:
        return None
    if type(value) is str:
        return datetime.fromisoformat(value + "+00:00")
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


def _chunks(values: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), CHUNK):
        yield list(values[start : start + CHUNK])


# Statements are built once, with expanding parameters: building and keying a SELECT costs several
# times what SQLite takes to run a small one, and a gate call or an explain runs a dozen of them.
def _many(name: str = "ids") -> Any:
    return bindparam(name, expanding=True)


@dataclass(frozen=True)
class _Scoped:
    """One query over the focus targets (``of="targets"``) or their resources, in two forms: over id
    lists, run once per chunk (a partial focus), or over the focus deployments' targets (a whole one)."""

    partial: Any
    whole: Any
    of: str = "targets"


def _scoped(columns: Sequence[Any], column: Any, *where: Any, of: str = "targets") -> _Scoped:
    picked = T.id if of == "targets" else T.resource_id
    every = select(picked).where(col(T.deployment_id).in_(_many("deployments")))
    return _Scoped(select(*columns).where(col(column).in_(_many()), *where),
                   select(*columns).where(col(column).in_(every), *where), of)


_ELSEWHERE = col(T.deployment_id).not_in(_many("deployments"))


def _upstream(resources: Any) -> Any:
    """The successful jobs (current versions) of other deployments' targets on these resources."""
    neighbours = select(T.id).where(col(T.resource_id).in_(resources), _ELSEWHERE)
    return select(*_JOB_COLUMNS).where(col(J.release_target_id).in_(neighbours), J.status == JobStatus.SUCCESSFUL.value)


_FOCUS = select(*_FOCUS_COLUMNS).where(col(T.id).in_(_many()))
_TARGET_COUNT = select(func.count()).where(col(T.deployment_id).in_(_many("deployments")))
_FOCUS_JOBS = _scoped(_JOB_COLUMNS, J.release_target_id)
_RESOURCE_REVISIONS = _scoped((ResourceRow.id, ResourceRow.revision), ResourceRow.id, of="resources")
_NEIGHBOURS = _scoped(_TARGET_COLUMNS, T.resource_id, _ELSEWHERE, of="resources")
_UPSTREAM_JOBS = _Scoped(
    _upstream(_many()),
    _upstream(select(T.resource_id).where(col(T.deployment_id).in_(_many("deployments")))),
    of="resources",
)
_IN_ENVIRONMENTS = (col(T.deployment_id).in_(_many("deployments")), col(T.environment_id).in_(_many("environments")))
_SIBLINGS = select(*_TARGET_COLUMNS).where(*_IN_ENVIRONMENTS)
_SIBLING_JOBS = select(*_JOB_COLUMNS).where(col(J.version_id).in_(_many()),
                                            col(J.release_target_id).in_(select(T.id).where(*_IN_ENVIRONMENTS)))


@cache
def _rows_where_in(row_type: Any, column: str) -> Any:
    return select(row_type).where(col(getattr(row_type, column)).in_(_many()))


@dataclass(frozen=True)
class _Scope:
    """The focus targets and the deployments they belong to."""

    focus: list[Any]  # rows of _FOCUS_COLUMNS
    deployment_ids: list[str]
    whole: bool  # the focus is every target of its deployments (a full pass)

    def rows(self, session: Session, query: _Scoped) -> list[Any]:
        """``query`` over the focus targets or their resources, as Core rows: the ORM's per-row
        bookkeeping is wasted on column tuples."""
        connection = session.connection()
        if self.whole:
            return list(connection.execute(query.whole, {"deployments": self.deployment_ids}).all())
        keys = [t[0] for t in self.focus] if query.of == "targets" else sorted({t[1] for t in self.focus})
        return [row for chunk in _chunks(keys)
                for row in connection.execute(query.partial, {"ids": chunk, "deployments": self.deployment_ids}).all()]


def load_snapshot(session: Session, focus_ids: Sequence[str]) -> Snapshot:
    session.flush()  # bulk reads go to the connection, past the session's autoflush
    scope = _scope(session, focus_ids)
    deployments = {r.id: r for r in _rows_by_id(session, DeploymentRow, scope.deployment_ids)}
    system_ids = sorted({deployments[d].system_id for d in scope.deployment_ids})
    environments = sorted(_select_in(session, EnvironmentRow, "system_id", system_ids), key=lambda e: e.name)
    policies = load_policies(session)
    docs = _Documents(
        resources=_resources(session, scope),
        environments={e.id: Doc(environment_doc(e)) for e in environments},
        deployments={d.id: Doc(deployment_doc(d)) for d in deployments.values()},
    )
    needs = _reads(scope, policies, docs)
    neighbours = _neighbours(session, scope) if needs.upstream else []
    upstream_deployments = sorted({t.deployment_id for t in neighbours} - deployments.keys())
    for row in _rows_by_id(session, DeploymentRow, upstream_deployments):
        deployments[row.id] = row
        docs.deployments[row.id] = Doc(deployment_doc(row))
    version_rows = _select_in(session, DeploymentVersionRow, "deployment_id", scope.deployment_ids)
    versions = sorted((_version(v) for v in version_rows), key=lambda v: (v.created_at, v.id), reverse=True)
    by_deployment = _grouped((v.deployment_id, v) for v in versions)

    focus = [_target(row) for row in scope.focus]
    jobs = _jobs_per_target(scope.rows(session, _FOCUS_JOBS))  # full history
    currents: dict[str, JobFact | None] = {}
    candidate_ids = _candidate_ids(scope.focus, jobs, by_deployment, currents)
    upstream_rows = scope.rows(session, _UPSTREAM_JOBS) if needs.upstream else []
    if scope.whole:
        siblings = focus
        jobs |= _jobs_per_target(upstream_rows)
    else:
        counted = sorted(needs.dependency_environments)
        siblings = _siblings(session, scope.deployment_ids, sorted(needs.rollout_environments | set(counted)))
        focus_set = {t[0] for t in scope.focus}
        rows = _sibling_job_rows(session, scope.deployment_ids, counted, candidate_ids) if counted else []
        jobs |= _jobs_per_target(chain((r for r in rows if r[1] not in focus_set), upstream_rows))

    version_docs = {v.id: Doc(v.doc) for v in versions}
    version_docs |= _upstream_versions(session, jobs, version_docs)
    snapshot = Snapshot(
        policies=policies,
        targets={t.id: t for t in [*focus, *siblings, *neighbours]},
        resources=docs.resources,
        environments=docs.environments,
        deployments=docs.deployments,
        system_environments=_grouped((e.system_id, e.id) for e in environments),
        versions=by_deployment,
        version_docs=version_docs,
        jobs=jobs,
        approvals=_approvals(session, candidate_ids),
        overrides=_overrides(session, candidate_ids),
        # Complete per (deployment, environment): siblings hold every target of the environments loaded.
        environment_targets=_grouped(((t.deployment_id, t.environment_id), t.id) for t in siblings),
        resource_targets=_grouped(
            chain(((t[1], t[0]) for t in scope.focus), ((n.resource_id, n.id) for n in neighbours))
        ),
        requests=_requests(scope.focus),
        job_agents={a.id: a.config for a in _rows_by_id(session, JobAgentRow, sorted(
            {d.job_agent_id for d in deployments.values() if d.job_agent_id}))},
    )
    snapshot.remember_current(currents)
    return snapshot


@dataclass(frozen=True)
class _Documents:
    resources: dict[str, Doc]
    environments: dict[str, Doc]
    deployments: dict[str, Doc]


def _reads(scope: _Scope, policies: Sequence[Policy], docs: _Documents) -> Reads:
    """What the focus targets' decisions read of other targets. A whole deployment reads all of its
    own (no selector need be tested to know it); a partial focus loads only what its rules read."""
    if scope.whole:
        upstream = any(isinstance(r.spec, DeploymentDependencySpec) for p in policies for r in p.rules)
        return Reads(upstream=upstream)
    # Targets that agree on the environment, the deployment and this match the same policies (as
    # decision._plan relies on): a batch has a few distinct ones.
    projection = policy_projection(policies)
    read, seen = Reads(), set()
    for target in scope.focus:
        resource = docs.resources[target[1]]
        key = (target[2], target[3], projection.key({"resource": resource}))
        if key not in seen:
            seen.add(key)
            activation = {"environment": docs.environments[target[2]], "resource": resource,
                          "deployment": docs.deployments[target[3]]}
            read |= reads(policies, activation, target[2], docs.environments)
    return read


def _target(row: Any) -> TargetFact:
    return TargetFact(row[0], row[1], row[2], row[3])


def _requests(focus: Sequence[Any]) -> dict[str, RedeployRequest]:
    return {
        t[0]: RedeployRequest(t[4], t[5] or "", t[6] or "", _utc(t[7]))  # type: ignore[arg-type]
        for t in focus
        if t[4] is not None and t[7] is not None
    }


def _grouped(pairs: Iterable[tuple[K, V]]) -> dict[K, tuple[V, ...]]:
    """Values by key, in the order met."""
    grouped: dict[K, list[V]] = defaultdict(list)
    for key, value in pairs:
        grouped[key].append(value)
    return {key: tuple(values) for key, values in grouped.items()}


def _scope(session: Session, focus_ids: Sequence[str]) -> _Scope:
    connection = session.connection()
    focus = [row for chunk in _chunks(focus_ids) for row in connection.execute(_FOCUS, {"ids": chunk}).all()]
    deployment_ids = sorted({t[3] for t in focus})
    # One target (an explain, a gate call) is never worth the whole-deployment form: skip the count.
    whole = len(focus) > 1 and connection.execute(
        _TARGET_COUNT, {"deployments": deployment_ids}).scalar_one() == len(focus)
    return _Scope(focus, deployment_ids, whole)


def _siblings(session: Session, deployment_ids: Sequence[str], environment_ids: Sequence[str]) -> list[TargetFact]:
    """The deployments' targets in these environments."""
    if not environment_ids:
        return []
    where = {"deployments": deployment_ids, "environments": environment_ids}
    rows = session.connection().execute(_SIBLINGS, where).all()
    return [TargetFact(*row) for row in rows]


def _neighbours(session: Session, scope: _Scope) -> list[TargetFact]:
    """Other deployments' targets on the focus resources (deploymentDependency reads them)."""
    return [TargetFact(*row) for row in scope.rows(session, _NEIGHBOURS)]


def _sibling_job_rows(
    session: Session, deployment_ids: Sequence[str], environment_ids: Sequence[str], version_ids: Sequence[str]
) -> list[Any]:
    """The candidate versions' jobs on the deployments' targets in these environments."""
    connection = session.connection()
    where = {"deployments": deployment_ids, "environments": environment_ids}
    return [row for chunk in _chunks(version_ids)
            for row in connection.execute(_SIBLING_JOBS, {"ids": chunk, **where}).all()]


def _candidate_ids(
    focus: Sequence[Any], jobs: Mapping[str, tuple[JobFact, ...]], versions: Mapping[str, tuple[VersionFact, ...]],
    currents: dict[str, JobFact | None],
) -> list[str]:
    """The versions a focus target may be decided on: ready ones no older than the oldest current
    version among the focus targets of their deployment (there is no automatic downgrade), and any
    version an operator asked to redeploy. Other targets' jobs and approvals matter only for these.
    Fills ``currents`` with each focus target's current job, which the decision reads again."""
    by_id = {v.id: v for vs in versions.values() for v in vs}
    floors: dict[str, list[tuple[datetime, str] | None]] = defaultdict(list)
    for target in focus:
        job = currents[target[0]] = current_job(jobs.get(target[0], ()))
        current = by_id.get(job.version_id) if job is not None else None
        in_deployment = current is not None and current.deployment_id == target[3]
        floors[target[3]].append((current.created_at, current.id) if in_deployment else None)  # type: ignore[union-attr]
    wanted = {t[4] for t in focus if t[4] is not None}
    for deployment_id, found in floors.items():
        floor = None if None in found else min(f for f in found if f is not None)
        wanted |= {
            v.id for v in versions.get(deployment_id, ())
            if v.status is VersionStatus.READY and (floor is None or (v.created_at, v.id) >= floor)
        }
    return sorted(wanted)


def _jobs_per_target(rows: Iterable[Any]) -> dict[str, tuple[JobFact, ...]]:
    """Newest first."""
    statuses, utc = _STATUSES, _utc
    per_target: dict[str, list[JobFact]] = defaultdict(list)
    for job_id, target_id, version_id, status, attempt, created_at, completed_at, verification, verified_at in rows:
        per_target[target_id].append(JobFact(
            job_id, target_id, version_id, statuses[status], attempt, utc(created_at),  # type: ignore[arg-type]
            None if completed_at is None else utc(completed_at),
            verification, None if verified_at is None else utc(verified_at)))
    return {t: tuple(js) if len(js) == 1 else tuple(sorted(js, key=_newest, reverse=True))
            for t, js in per_target.items()}


def _newest(job: JobFact) -> tuple[datetime, int]:
    return job.created_at, job.attempt


def _resources(session: Session, scope: _Scope) -> dict[str, Doc]:
    """The focus resources' documents from the per-revision cache; only changed ones are read whole."""
    revisions = scope.rows(session, _RESOURCE_REVISIONS)
    docs = {rid: cached(rid, revision) for rid, revision in revisions}
    missing = sorted(rid for rid, doc in docs.items() if doc is None)
    for row in _rows_by_id(session, ResourceRow, missing):
        docs[row.id] = cached_doc(row.id, row.revision, resource_doc(row))
    return docs  # type: ignore[return-value]


def _version(row: DeploymentVersionRow) -> VersionFact:
    return VersionFact(
        id=row.id,
        deployment_id=row.deployment_id,
        tag=row.tag,
        status=VersionStatus(row.status),
        created_at=row.created_at,
        created_by=row.created_by,
        doc=version_doc(row),
    )


def _rows_by_id(session: Session, row_type: type[Any], ids: Sequence[str]) -> list[Any]:
    return list(_select_in(session, row_type, "id", ids))


def _select_in(session: Session, row_type: Any, column: str, values: Sequence[str]) -> Iterable[Any]:
    statement = _rows_where_in(row_type, column)
    for chunk in _chunks(values):
        yield from session.exec(statement, params={"ids": chunk})


def _upstream_versions(session: Session, jobs: dict[str, tuple[JobFact, ...]], known: dict[str, Doc]) -> dict[str, Doc]:
    wanted = sorted({j.version_id for js in jobs.values() for j in js} - known.keys())
    return {r.id: Doc(version_doc(r)) for r in _rows_by_id(session, DeploymentVersionRow, wanted)}


_APPROVAL_COLUMNS: tuple[Any, ...] = (ApprovalRow.version_id, ApprovalRow.environment_id, ApprovalRow.user,
                                      ApprovalRow.status, ApprovalRow.created_at)
_APPROVALS = select(*_APPROVAL_COLUMNS).where(col(ApprovalRow.version_id).in_(_many()))
_OVERRIDE_COLUMNS: tuple[Any, ...] = (
    OverrideRow.id, OverrideRow.version_id, OverrideRow.environment_id, OverrideRow.resource_id, OverrideRow.policy_id,
    OverrideRow.rule_types, OverrideRow.reason, OverrideRow.created_by, OverrideRow.created_at, OverrideRow.expires_at)
_OVERRIDES = select(*_OVERRIDE_COLUMNS).where(col(OverrideRow.version_id).in_(_many()),
                                              col(OverrideRow.revoked_at).is_(None))


def _approvals(session: Session, version_ids: Sequence[str]) -> dict[tuple[str, str], tuple[ApprovalFact, ...]]:
    grouped: dict[tuple[str, str], list[ApprovalFact]] = defaultdict(list)
    connection = session.connection()
    for chunk in _chunks(version_ids):
        rows = connection.execute(_APPROVALS, {"ids": chunk}).all()
        for version_id, environment_id, user, status, created_at in rows:
            grouped[(version_id, environment_id)].append(
                ApprovalFact(user=user, status=ApprovalStatus(status), created_at=created_at)
            )
    return {k: tuple(v) for k, v in grouped.items()}


def _overrides(session: Session, version_ids: Sequence[str]) -> tuple[OverrideFact, ...]:
    connection = session.connection()
    return tuple(
        OverrideFact(
            id=row.id,
            version_id=row.version_id,
            environment_id=row.environment_id,
            resource_id=row.resource_id,
            policy_id=row.policy_id,
            rule_types=frozenset(row.rule_types) if row.rule_types is not None else None,
            reason=row.reason,
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )
        for chunk in _chunks(version_ids)
        for row in connection.execute(_OVERRIDES, {"ids": chunk}).all()
    )
