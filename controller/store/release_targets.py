"""Keeps the ``release_target`` table exact as inventory changes: the shell around ``controller.targets``.

Each sync reads only what the change can affect, asks the pure core for the desired triples, and
writes the difference in the caller's transaction. Documents are cached per entity revision
(id, revision), so a selector change re-reads rows but does not rebuild their CEL values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, insert
from sqlmodel import Session, col, select

from controller.cel import Doc, compile_expression
from controller.ids import new_id
from controller.store import triggers
from controller.store.doc_cache import resource_doc_cached
from controller.store.tables import DeploymentRow, EnvironmentRow, ReleaseTargetRow, ResourceRow
from controller.targets import (
    RESOURCE_VARIABLES,
    Scope,
    Triple,
    group_by_system,
    targets_for_deployment,
    targets_for_environment,
    targets_for_resource,
)

CHUNK = 2000


@dataclass
class TargetDelta:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def scope_of(row: EnvironmentRow | DeploymentRow) -> Scope:
    selector = compile_expression(row.resource_selector, RESOURCE_VARIABLES) if row.resource_selector else None
    return Scope(row.id, row.system_id, selector)


def _all_resources(session: Session) -> Iterator[tuple[str, Doc]]:
    for row in session.exec(select(ResourceRow).execution_options(yield_per=CHUNK)):
        yield row.id, resource_doc_cached(row)


def _existing(session: Session, *condition: ColumnElement[bool] | bool) -> dict[Triple, str]:
    stmt = select(
        ReleaseTargetRow.id,
        ReleaseTargetRow.resource_id,
        ReleaseTargetRow.environment_id,
        ReleaseTargetRow.deployment_id,
    ).where(*condition)
    return {(r, e, d): target_id for target_id, r, e, d in session.exec(stmt)}


def _apply(session: Session, existing: dict[Triple, str], desired: set[Triple], now: datetime) -> TargetDelta:
    delta = TargetDelta()
    stale = [target_id for triple, target_id in existing.items() if triple not in desired]
    for start in range(0, len(stale), CHUNK):
        session.execute(delete(ReleaseTargetRow).where(col(ReleaseTargetRow.id).in_(stale[start : start + CHUNK])))
    delta.removed = stale
    fresh: list[dict[str, Any]] = [
        {"id": new_id(), "resource_id": r, "environment_id": e, "deployment_id": d, "created_at": now}
        for (r, e, d) in sorted(desired - existing.keys())
    ]
    for start in range(0, len(fresh), CHUNK):
        session.execute(insert(ReleaseTargetRow), fresh[start : start + CHUNK])
    delta.added = [row["id"] for row in fresh]
    changed = {triple for triple in existing if triple not in desired} | (desired - existing.keys())
    if changed:
        triggers.targets_changed(session, {d for (_, _, d) in changed}, now)
    return delta


def _scopes(session: Session, row_type: type[EnvironmentRow | DeploymentRow], *where: object) -> list[Scope]:
    return [scope_of(row) for row in session.exec(select(row_type).where(*where))]  # type: ignore[arg-type]


def sync_resources(session: Session, resources: Sequence[tuple[str, Doc]], now: datetime) -> TargetDelta:
    """After resources were created or changed."""
    environments = _scopes(session, EnvironmentRow)
    deployments = group_by_system(_scopes(session, DeploymentRow))
    desired: set[Triple] = set()
    for resource_id, doc in resources:
        desired |= targets_for_resource(resource_id, doc, environments, deployments)
    ids = [resource_id for resource_id, _ in resources]
    existing: dict[Triple, str] = {}
    for start in range(0, len(ids), CHUNK):
        existing |= _existing(session, col(ReleaseTargetRow.resource_id).in_(ids[start : start + CHUNK]))
    return _apply(session, existing, desired, now)


def sync_environment(session: Session, env: EnvironmentRow, now: datetime) -> TargetDelta:
    """After an environment was created or its selector changed."""
    deployments = _scopes(session, DeploymentRow, DeploymentRow.system_id == env.system_id)
    desired = targets_for_environment(scope_of(env), _all_resources(session), deployments)
    return _apply(session, _existing(session, ReleaseTargetRow.environment_id == env.id), desired, now)


def sync_deployment(session: Session, dep: DeploymentRow, now: datetime) -> TargetDelta:
    """After a deployment was created or its selector changed."""
    environments = _scopes(session, EnvironmentRow, EnvironmentRow.system_id == dep.system_id)
    desired = targets_for_deployment(scope_of(dep), _all_resources(session), environments)
    return _apply(session, _existing(session, ReleaseTargetRow.deployment_id == dep.id), desired, now)


def remove_targets(session: Session, now: datetime, *condition: ColumnElement[bool] | bool) -> TargetDelta:
    existing = _existing(session, *condition)
    return _apply(session, existing, set(), now) if existing else TargetDelta()

