"""Durable triggers: every event marks exactly the release targets it can affect (SPEC §6).

Marking bumps ``dirty_generation`` in the writer's own transaction, so a trigger is as durable as
the change that caused it. The loop records the generation it evaluated; a trigger that lands during
a pass leaves the target still dirty for the next one. Nothing is ever deleted to acknowledge. On
PostgreSQL every marker locks its rows in id order, so writers marking overlapping sets queue up
instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, update
from sqlmodel import Session, col, select

from controller.cel import Doc
from controller.ids import new_id
from controller.policy import compile_selector
from controller.store.doc_cache import resource_doc_cached
from controller.store.documents import deployment_doc, environment_doc
from controller.store.tables import (
    DeploymentRow,
    DeploymentTriggerRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobRow,
    ReleaseTargetRow,
    ResourceRow,
)

CHUNK = 2000
DIRTY = {"dirty_generation": ReleaseTargetRow.dirty_generation + 1}


def mark(session: Session, *conditions: Any) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # Lock the rows in id order first. A bare UPDATE locks them in the order its scan meets them,
        # which differs between two writers once other transactions have moved rows (every update
        # writes a new row version elsewhere): two job reports on one deployment, each marking all of
        # its targets, would deadlock, and one of them would fail. NO KEY UPDATE is the lock the UPDATE
        # takes anyway; it does not conflict with the KEY SHARE locks of foreign-key checks.
        ordered = select(ReleaseTargetRow.id).where(*conditions).order_by(col(ReleaseTargetRow.id))
        session.execute(select(func.count()).select_from(ordered.with_for_update(key_share=True).subquery()))
    session.execute(update(ReleaseTargetRow).where(*conditions).values(DIRTY))


def mark_ids(session: Session, target_ids: Iterable[str]) -> None:
    ids = sorted(set(target_ids))
    for start in range(0, len(ids), CHUNK):
        mark(session, col(ReleaseTargetRow.id).in_(ids[start : start + CHUNK]))


def version_changed(session: Session, version: DeploymentVersionRow) -> None:
    mark(session, ReleaseTargetRow.deployment_id == version.deployment_id)


def approval_changed(session: Session, version_id: str, environment_id: str) -> None:
    version = session.get(DeploymentVersionRow, version_id)
    if version is not None:
        mark(
            session,
            ReleaseTargetRow.deployment_id == version.deployment_id,
            ReleaseTargetRow.environment_id == environment_id,
        )


def job_changed(session: Session, job: JobRow) -> None:
    """Its target; the deployment's other targets (progression reads them); and the other
    deployments' targets on the same resource (deploymentDependency reads them)."""
    target = session.get(ReleaseTargetRow, job.release_target_id)
    if target is None:
        return
    mark(
        session,
        or_(
            col(ReleaseTargetRow.deployment_id) == target.deployment_id,
            col(ReleaseTargetRow.resource_id) == target.resource_id,
        ),
    )


def override_changed(session: Session, version_id: str, environment_id: str | None, resource_id: str | None) -> None:
    version = session.get(DeploymentVersionRow, version_id)
    if version is None:
        return
    conditions: list[Any] = [ReleaseTargetRow.deployment_id == version.deployment_id]
    if environment_id is not None:
        conditions.append(ReleaseTargetRow.environment_id == environment_id)
    if resource_id is not None:
        conditions.append(ReleaseTargetRow.resource_id == resource_id)
    mark(session, *conditions)


def resource_changed(session: Session, resource_id: str) -> None:
    """Policy selectors and CEL rules over the resource may now differ for its targets."""
    mark(session, ReleaseTargetRow.resource_id == resource_id)


def environment_changed(session: Session, environment: EnvironmentRow) -> None:
    """Its own targets (policy selectors read it) and every target of its system's deployments:
    their ``environmentProgression`` selectors may now pick it, or no longer pick it."""
    in_system = select(DeploymentRow.id).where(DeploymentRow.system_id == environment.system_id)
    mark(session, or_(col(ReleaseTargetRow.environment_id) == environment.id,
                      col(ReleaseTargetRow.deployment_id).in_(in_system)))


def deployment_changed(session: Session, deployment_id: str) -> None:
    """Its own targets, and the other deployments' targets on the same resources: their
    ``deploymentDependency`` rules read this deployment."""
    resources = select(ReleaseTargetRow.resource_id).where(ReleaseTargetRow.deployment_id == deployment_id)
    mark(session, or_(col(ReleaseTargetRow.deployment_id) == deployment_id,
                      col(ReleaseTargetRow.resource_id).in_(resources)))


def targets_changed(session: Session, deployment_ids: Iterable[str], now: datetime) -> None:
    """Targets appeared or disappeared: their siblings' progression counts and rollout orders moved.
    Deferred: a row per deployment now, fanned out to its targets by the next pass (``expand``)."""
    rows = [{"id": new_id(), "deployment_id": d, "created_at": now} for d in sorted(set(deployment_ids))]
    if rows:
        session.execute(insert(DeploymentTriggerRow), rows)


def expand(session: Session) -> int:
    """Turn deferred deployment triggers into target marks; returns how many triggers it expanded."""
    pending = list(session.exec(select(DeploymentTriggerRow.id, DeploymentTriggerRow.deployment_id)))
    if not pending:
        return 0
    mark(session, col(ReleaseTargetRow.deployment_id).in_(sorted({d for _, d in pending})))
    ids = [i for i, _ in pending]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        session.execute(delete(DeploymentTriggerRow).where(col(DeploymentTriggerRow.id).in_(chunk)))
    return len(pending)


def policy_changed(session: Session, selectors: Sequence[str], enabled: Sequence[bool]) -> None:
    """Targets the policy matched before *or* matches after the write (one selector per state)."""
    live = [compile_selector(s) for s, on in zip(selectors, enabled, strict=True) if on]
    if not live:
        return
    matched = [t for t, activation in _activations(session) if any(p.test(activation) for p in live)]
    mark_ids(session, matched)


def _activations(session: Session) -> Iterable[tuple[str, dict[str, Doc]]]:
    environments = {e.id: Doc(environment_doc(e)) for e in session.exec(select(EnvironmentRow))}
    deployments = {d.id: Doc(deployment_doc(d)) for d in session.exec(select(DeploymentRow))}
    resources: dict[str, Doc] = {}
    rows = session.exec(select(ReleaseTargetRow.id, ReleaseTargetRow.resource_id, ReleaseTargetRow.environment_id,
                                ReleaseTargetRow.deployment_id))
    targets = list(rows)
    wanted = sorted({r for _, r, _, _ in targets})
    for start in range(0, len(wanted), CHUNK):
        for row in session.exec(select(ResourceRow).where(col(ResourceRow.id).in_(wanted[start : start + CHUNK]))):
            resources[row.id] = resource_doc_cached(row)
    for target_id, resource_id, environment_id, deployment_id in targets:
        yield target_id, {
            "environment": environments[environment_id],
            "resource": resources[resource_id],
            "deployment": deployments[deployment_id],
        }

