"""What awaits approvers: (version, environment) pairs whose ``anyApproval`` gates are not met yet.

A pair is listed when some release target of the version's deployment in that environment is
matched by a policy with an ``anyApproval`` rule, the version is ready and not older than every
target's current version there, and the rule is still pending (k/N shown). Pairs the caller has
already answered are left out unless ``include_answered``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from controller.cel import Doc
from controller.facts import ApprovalFact, ApprovalStatus
from controller.policy import Policy
from controller.rules import any_approval
from controller.rules.verdict import Status
from controller.store.doc_cache import resource_doc_cached
from controller.store.documents import deployment_doc, environment_doc
from controller.store.policies import load_policies
from controller.store.tables import (
    ApprovalRow,
    DeploymentRow,
    DeploymentVersionRow,
    EnvironmentRow,
    JobRow,
    ReleaseTargetRow,
    ResourceRow,
)

VERSIONS_PER_DEPLOYMENT = 20


@dataclass
class PendingPair:
    version: DeploymentVersionRow
    environment: EnvironmentRow
    required: int = 0
    approved: int = 0
    approvers: list[str] = field(default_factory=list)
    rejected_by: list[str] = field(default_factory=list)
    policies: set[str] = field(default_factory=set)
    targets: int = 0


def pending_approvals(
    session: Session, user: str, now: datetime, *, include_answered: bool = False
) -> list[PendingPair]:
    policies = [p for p in load_policies(session) if any(r.type == "anyApproval" for r in p.rules)]
    if not policies:
        return []
    pairs: dict[tuple[str, str], PendingPair] = {}
    environments = {e.id: e for e in session.exec(select(EnvironmentRow))}
    env_docs = {k: Doc(environment_doc(v)) for k, v in environments.items()}
    for deployment in session.exec(select(DeploymentRow)):
        versions = list(session.exec(
            select(DeploymentVersionRow)
            .where(DeploymentVersionRow.deployment_id == deployment.id, DeploymentVersionRow.status == "ready")
            .order_by(col(DeploymentVersionRow.created_at).desc())
            .limit(VERSIONS_PER_DEPLOYMENT)
        ))
        if not versions:
            continue
        dep_doc = Doc(deployment_doc(deployment))
        rules_by_env = _approval_rules_by_environment(session, deployment.id, dep_doc, env_docs, policies)
        approvals = _approvals(session, [v.id for v in versions])
        for env_id, (rules, target_count, oldest_current) in rules_by_env.items():
            for version in versions:
                if oldest_current is not None and version.created_at < oldest_current:
                    continue
                rows = approvals.get((version.id, env_id), [])
                _add(pairs, version, environments[env_id], rules, target_count, rows, now)
    result = [p for p in pairs.values() if p.required]
    if not include_answered:
        result = [p for p in result if user not in p.approvers and user not in p.rejected_by]
    return sorted(result, key=lambda p: (p.version.created_at, p.environment.name), reverse=True)


ApprovalRules = list[tuple[str, any_approval.AnyApprovalSpec]]


def _approval_rules_by_environment(
    session: Session, deployment_id: str, dep_doc: Doc, env_docs: dict[str, Doc], policies: list[Policy]
) -> dict[str, tuple[ApprovalRules, int, datetime | None]]:
    """Per environment: the anyApproval rules matching some target, the target count, and the
    oldest current version's createdAt (None when some target has none: every version qualifies)."""
    targets = list(session.exec(select(ReleaseTargetRow).where(ReleaseTargetRow.deployment_id == deployment_id)))
    resource_ids = sorted({t.resource_id for t in targets})
    resources = {r.id: r for r in session.exec(select(ResourceRow).where(col(ResourceRow.id).in_(resource_ids)))}
    current = _current_created_at(session, [t.id for t in targets])
    rules: dict[str, dict[str, tuple[str, any_approval.AnyApprovalSpec]]] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)
    currents: dict[str, list[datetime | None]] = defaultdict(list)
    for target in targets:
        env_id = target.environment_id
        counts[env_id] += 1
        currents[env_id].append(current.get(target.id))
        activation = {
            "environment": env_docs[env_id],
            "resource": resource_doc_cached(resources[target.resource_id]),
            "deployment": dep_doc,
        }
        for policy in policies:
            if policy.selector.test(activation):
                for rule in policy.rules:
                    if isinstance(rule.spec, any_approval.AnyApprovalSpec):
                        rules[env_id][rule.id] = (policy.name, rule.spec)
    return {
        env_id: (list(found.values()), counts[env_id], _oldest(currents[env_id]))
        for env_id, found in rules.items()
    }


def _oldest(values: list[datetime | None]) -> datetime | None:
    return None if any(v is None for v in values) else min(v for v in values if v is not None)


def _current_created_at(session: Session, target_ids: list[str]) -> dict[str, datetime]:
    """Per target, the createdAt of its current version (latest successful job's version)."""
    if not target_ids:
        return {}
    stmt = (
        select(JobRow.release_target_id, JobRow.completed_at, DeploymentVersionRow.created_at)
        .join(DeploymentVersionRow, col(DeploymentVersionRow.id) == col(JobRow.version_id))
        .where(col(JobRow.release_target_id).in_(target_ids), JobRow.status == "successful")
    )
    best: dict[str, tuple[datetime, datetime]] = {}
    for target_id, completed_at, created_at in session.exec(stmt):
        if completed_at is not None and (target_id not in best or completed_at > best[target_id][0]):
            best[target_id] = (completed_at, created_at)
    return {k: v[1] for k, v in best.items()}


def _approvals(session: Session, version_ids: list[str]) -> dict[tuple[str, str], list[ApprovalRow]]:
    grouped: dict[tuple[str, str], list[ApprovalRow]] = defaultdict(list)
    for row in session.exec(select(ApprovalRow).where(col(ApprovalRow.version_id).in_(version_ids))):
        grouped[(row.version_id, row.environment_id)].append(row)
    return grouped


def _add(pairs: dict[tuple[str, str], PendingPair], version: DeploymentVersionRow, environment: EnvironmentRow,
         rules: list[tuple[str, any_approval.AnyApprovalSpec]], target_count: int, rows: list[ApprovalRow],
         now: datetime) -> None:
    facts = [ApprovalFact(r.user, ApprovalStatus(r.status), r.created_at) for r in rows]
    for policy_name, spec in rules:
        verdict = any_approval.evaluate(spec, approvals=facts, version_created_by=version.created_by, now=now)
        if verdict.status is Status.ALLOWED:
            continue
        pair = pairs.setdefault((version.id, environment.id), PendingPair(version, environment, targets=target_count))
        pair.required = max(pair.required, spec.min_approvals)
        pair.approved = max(pair.approved, int(verdict.details.get("approved", 0)))
        pair.approvers = sorted(r.user for r in rows if r.status == "approved")
        pair.rejected_by = sorted(r.user for r in rows if r.status == "rejected")
        pair.policies.add(policy_name)
