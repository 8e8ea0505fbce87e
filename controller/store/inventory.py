"""Inventory writes: systems, resources, environments, deployments, versions and job agents.

Every write validates references, uniqueness and CEL, keeps release targets exact, and appends an
audit row, all in the caller's transaction: a rejected write changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlmodel import Session, SQLModel, col, select

from controller.auth import Principal
from controller.cel import CelSyntaxError, Doc, compile_expression
from controller.errors import Conflict, Invalid
from controller.ids import new_id
from controller.store import documents as docs
from controller.store import triggers
from controller.store.doc_cache import cached_doc, resource_doc_cached
from controller.store.release_targets import (
    TargetDelta,
    remove_targets,
    sync_deployment,
    sync_environment,
    sync_resources,
)
from controller.store.repo import audit, entry, insert_many, record, require_unique
from controller.store.tables import (
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobAgentRow,
    ReleaseTargetRow,
    ResourceRow,
    SystemRow,
)
from controller.targets import RESOURCE_VARIABLES

Fields = Mapping[str, Any]
RowT = TypeVar("RowT", bound=SQLModel)
# API field names that differ from row attributes (``metadata`` is reserved by SQLModel).
ATTRIBUTE = {"metadata": "meta"}


@dataclass(frozen=True)
class Context:
    """Who writes, and the one instant the write happens at."""

    session: Session
    actor: Principal
    now: datetime


def _assign(row: Any, fields: Fields) -> None:
    for name, value in fields.items():
        setattr(row, ATTRIBUTE.get(name, name), value)


def _insert(ctx: Context, row: Any, entity: str, doc: Callable[[Any], dict[str, Any]]) -> None:
    ctx.session.add(row)
    audit(ctx.session, ctx.actor, ctx.now, "create", entity, row.id, None, doc(row))


def _patch(ctx: Context, row: Any, fields: Fields, entity: str, doc: Callable[[Any], dict[str, Any]]) -> bool:
    before = doc(row)
    _assign(row, fields)
    if doc(row) == before:
        return False
    row.updated_at = ctx.now
    row.revision += 1
    ctx.session.add(row)
    audit(ctx.session, ctx.actor, ctx.now, "update", entity, row.id, before, doc(row))
    return True


def _remove(ctx: Context, row: Any, entity: str, doc: Callable[[Any], dict[str, Any]]) -> None:
    audit(ctx.session, ctx.actor, ctx.now, "delete", entity, row.id, doc(row), None)
    ctx.session.delete(row)
    ctx.session.flush()


def new_row(row_type: type[RowT], ctx: Context, fields: Fields, **extra: Any) -> RowT:
    row = row_type(id=new_id(), created_at=ctx.now, updated_at=ctx.now, **extra)
    _assign(row, fields)
    return row


def check_selector(source: str | None, field: str) -> str | None:
    """Blank means absent. Invalid CEL is a 422 carrying the expression, line and column."""
    if source is None or not source.strip():
        return None
    try:
        compile_expression(source, RESOURCE_VARIABLES)
    except CelSyntaxError as exc:
        raise Invalid.one(
            ("body", field),
            exc.described,
            "cel_syntax",
            expression=source,
            line=exc.line,
            column=exc.column,
        ) from None
    return source


# -- systems --------------------------------------------------------------------------------------


def create_system(ctx: Context, fields: Fields) -> SystemRow:
    require_unique(ctx.session, SystemRow, ("body", "name"), SystemRow.name == fields["name"])
    row = new_row(SystemRow, ctx, fields)
    _insert(ctx, row, "system", docs.system_doc)
    return row


def update_system(ctx: Context, row: SystemRow, fields: Fields) -> SystemRow:
    if "name" in fields:
        require_unique(ctx.session, SystemRow, ("body", "name"), SystemRow.name == fields["name"], exclude_id=row.id)
    _patch(ctx, row, fields, "system", docs.system_doc)
    return row


def delete_system(ctx: Context, row: SystemRow) -> None:
    for child, label in ((EnvironmentRow, "environments"), (DeploymentRow, "deployments")):
        if ctx.session.exec(select(child).where(child.system_id == row.id)).first() is not None:
            raise Conflict(("path", "id"), f"system still has {label}; delete them first")
    _remove(ctx, row, "system", docs.system_doc)


# -- resources ------------------------------------------------------------------------------------


def create_resource(ctx: Context, fields: Fields) -> ResourceRow:
    loc = ("body", "identifier")
    require_unique(ctx.session, ResourceRow, loc, ResourceRow.identifier == fields["identifier"])
    row = new_row(ResourceRow, ctx, fields)
    _insert(ctx, row, "resource", docs.resource_doc)
    sync_resources(ctx.session, [(row.id, resource_doc_cached(row))], ctx.now)
    return row


def update_resource(ctx: Context, row: ResourceRow, fields: Fields) -> ResourceRow:
    if "identifier" in fields:
        loc = ("body", "identifier")
        require_unique(ctx.session, ResourceRow, loc, ResourceRow.identifier == fields["identifier"], exclude_id=row.id)
    if _patch(ctx, row, fields, "resource", docs.resource_doc):
        sync_resources(ctx.session, [(row.id, resource_doc_cached(row))], ctx.now)
        triggers.resource_changed(ctx.session, row.id)
    return row


@dataclass(frozen=True)
class UpsertResult:
    docs: list[dict[str, Any]]
    created: int
    updated: int
    unchanged: int
    targets: TargetDelta


def upsert_resources(ctx: Context, items: Sequence[Fields]) -> UpsertResult:
    """Create or replace by identifier, in one transaction; unchanged resources are left alone.

    New resources go in with one multi-row insert (and one for their audit rows): syncs from
    cloud inventories send thousands at a time.
    """
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if item["identifier"] in seen:
            raise Invalid.one(("body", index, "identifier"), f"duplicates item {seen[item['identifier']]}")
        seen[item["identifier"]] = index
    existing = _resources_by_identifier(ctx.session, list(seen))
    result: list[dict[str, Any]] = []
    changed: list[tuple[str, Doc]] = []
    fresh: list[dict[str, Any]] = []
    created: list[dict[str, Any]] = []
    updated: list[str] = []
    for item in items:
        row = existing.get(item["identifier"])
        if row is None:
            values = {ATTRIBUTE.get(k, k): v for k, v in item.items()}
            values.update(id=new_id(), created_at=ctx.now, updated_at=ctx.now, revision=1)
            doc = docs.resource_doc(SimpleNamespace(**values))  # type: ignore[arg-type]
            fresh.append(values)
            created.append(entry(ctx.actor, ctx.now, "create", "resource", values["id"], None, doc))
            changed.append((values["id"], cached_doc(values["id"], 1, doc)))
        else:
            if _patch(ctx, row, item, "resource", docs.resource_doc):
                changed.append((row.id, resource_doc_cached(row)))
                updated.append(row.id)
            doc = docs.resource_doc(row)
        result.append(doc)
    insert_many(ctx.session, ResourceRow, fresh)
    record(ctx.session, created)
    for start in range(0, len(updated), 2000):
        triggers.mark(ctx.session, col(ReleaseTargetRow.resource_id).in_(updated[start : start + 2000]))
    delta = sync_resources(ctx.session, changed, ctx.now) if changed else TargetDelta()
    return UpsertResult(result, len(fresh), len(changed) - len(fresh), len(items) - len(changed), delta)


def _resources_by_identifier(session: Session, identifiers: list[str]) -> dict[str, ResourceRow]:
    found: dict[str, ResourceRow] = {}
    for start in range(0, len(identifiers), 2000):
        chunk = identifiers[start : start + 2000]
        for row in session.exec(select(ResourceRow).where(col(ResourceRow.identifier).in_(chunk))):
            found[row.identifier] = row
    return found


def delete_resource(ctx: Context, row: ResourceRow) -> None:
    remove_targets(ctx.session, ctx.now, ReleaseTargetRow.resource_id == row.id)
    _remove(ctx, row, "resource", docs.resource_doc)


# -- environments ---------------------------------------------------------------------------------


def _system_ref(ctx: Context, system_id: str) -> SystemRow:
    row = ctx.session.get(SystemRow, system_id)
    if row is None:
        raise Invalid.one(("body", "systemId"), f"system {system_id!r} does not exist", "reference")
    return row


def create_environment(ctx: Context, fields: Fields) -> EnvironmentRow:
    _system_ref(ctx, fields["system_id"])
    selector = check_selector(fields.get("resource_selector"), "resourceSelector")
    loc = ("body", "name")
    require_unique(
        ctx.session,
        EnvironmentRow,
        loc,
        EnvironmentRow.system_id == fields["system_id"],
        EnvironmentRow.name == fields["name"],
    )
    row = new_row(EnvironmentRow, ctx, {**fields, "resource_selector": selector})
    _insert(ctx, row, "environment", docs.environment_doc)
    sync_environment(ctx.session, row, ctx.now)
    return row


def update_environment(ctx: Context, row: EnvironmentRow, fields: Fields) -> EnvironmentRow:
    changes = dict(fields)
    if "resource_selector" in changes:
        changes["resource_selector"] = check_selector(changes["resource_selector"], "resourceSelector")
    if "name" in changes:
        require_unique(
            ctx.session,
            EnvironmentRow,
            ("body", "name"),
            EnvironmentRow.system_id == row.system_id,
            EnvironmentRow.name == changes["name"],
            exclude_id=row.id,
        )
    old_selector = row.resource_selector
    if _patch(ctx, row, changes, "environment", docs.environment_doc):
        if row.resource_selector != old_selector:
            sync_environment(ctx.session, row, ctx.now)
        triggers.environment_changed(ctx.session, row)
    return row


def delete_environment(ctx: Context, row: EnvironmentRow) -> None:
    remove_targets(ctx.session, ctx.now, ReleaseTargetRow.environment_id == row.id)
    _remove(ctx, row, "environment", docs.environment_doc)


# -- deployments ----------------------------------------------------------------------------------


def _agent_ref(ctx: Context, agent_id: str | None) -> None:
    if agent_id is not None and ctx.session.get(JobAgentRow, agent_id) is None:
        raise Invalid.one(("body", "jobAgentId"), f"job agent {agent_id!r} does not exist", "reference")


def create_deployment(ctx: Context, fields: Fields) -> DeploymentRow:
    _system_ref(ctx, fields["system_id"])
    _agent_ref(ctx, fields.get("job_agent_id"))
    selector = check_selector(fields.get("resource_selector"), "resourceSelector")
    require_unique(
        ctx.session,
        DeploymentRow,
        ("body", "slug"),
        DeploymentRow.system_id == fields["system_id"],
        DeploymentRow.slug == fields["slug"],
    )
    row = new_row(DeploymentRow, ctx, {**fields, "resource_selector": selector})
    _insert(ctx, row, "deployment", docs.deployment_doc)
    sync_deployment(ctx.session, row, ctx.now)
    return row


def update_deployment(ctx: Context, row: DeploymentRow, fields: Fields) -> DeploymentRow:
    changes = dict(fields)
    if "resource_selector" in changes:
        changes["resource_selector"] = check_selector(changes["resource_selector"], "resourceSelector")
    if "job_agent_id" in changes:
        _agent_ref(ctx, changes["job_agent_id"])
    if "slug" in changes:
        require_unique(
            ctx.session,
            DeploymentRow,
            ("body", "slug"),
            DeploymentRow.system_id == row.system_id,
            DeploymentRow.slug == changes["slug"],
            exclude_id=row.id,
        )
    old_selector = row.resource_selector
    if _patch(ctx, row, changes, "deployment", docs.deployment_doc):
        if row.resource_selector != old_selector:
            sync_deployment(ctx.session, row, ctx.now)
        triggers.deployment_changed(ctx.session, row.id)
    return row


def delete_deployment(ctx: Context, row: DeploymentRow) -> None:
    remove_targets(ctx.session, ctx.now, ReleaseTargetRow.deployment_id == row.id)
    for version in ctx.session.exec(select(DeploymentVersionRow).where(DeploymentVersionRow.deployment_id == row.id)):
        ctx.session.delete(version)
    _remove(ctx, row, "deployment", docs.deployment_doc)


# -- versions -------------------------------------------------------------------------------------


def create_version(ctx: Context, deployment: DeploymentRow, fields: Fields) -> DeploymentVersionRow:
    require_unique(
        ctx.session,
        DeploymentVersionRow,
        ("body", "tag"),
        DeploymentVersionRow.deployment_id == deployment.id,
        DeploymentVersionRow.tag == fields["tag"],
    )
    values = dict(fields)
    values["name"] = values.get("name") or values["tag"]
    values["created_by"] = values.get("created_by") or ctx.actor.name
    created_at = values.pop("created_at", None) or ctx.now
    row = new_row(DeploymentVersionRow, ctx, values, deployment_id=deployment.id)
    row.created_at = created_at
    _insert(ctx, row, "deploymentVersion", docs.version_doc)
    triggers.version_changed(ctx.session, row)
    return row


def update_version(ctx: Context, row: DeploymentVersionRow, fields: Fields) -> DeploymentVersionRow:
    if _patch(ctx, row, fields, "deploymentVersion", docs.version_doc):
        triggers.version_changed(ctx.session, row)
    return row


# -- job agents -----------------------------------------------------------------------------------


def create_job_agent(ctx: Context, fields: Fields) -> JobAgentRow:
    require_unique(ctx.session, JobAgentRow, ("body", "name"), JobAgentRow.name == fields["name"])
    row = new_row(JobAgentRow, ctx, fields)
    _insert(ctx, row, "jobAgent", docs.job_agent_doc)
    return row


def update_job_agent(ctx: Context, row: JobAgentRow, fields: Fields) -> JobAgentRow:
    if "name" in fields:
        loc = ("body", "name")
        require_unique(ctx.session, JobAgentRow, loc, JobAgentRow.name == fields["name"], exclude_id=row.id)
    _patch(ctx, row, fields, "jobAgent", docs.job_agent_doc)
    return row


def delete_job_agent(ctx: Context, row: JobAgentRow) -> None:
    for dep in ctx.session.exec(select(DeploymentRow).where(DeploymentRow.job_agent_id == row.id)):
        if _patch(ctx, dep, {"job_agent_id": None}, "deployment", docs.deployment_doc):
            triggers.deployment_changed(ctx.session, dep.id)
    _remove(ctx, row, "jobAgent", docs.job_agent_doc)

