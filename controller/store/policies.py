"""Policy writes with revisions, and loading policies as compiled core ``Policy`` values.

Every create, replace, patch and delete appends a ``policy_revision`` row holding the whole
document, so any revision a decision cites stays readable. Compiled policies are cached per
(id, revision): a loop pass does not re-parse rules or recompile CEL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, true
from sqlmodel import Session, col, select

from controller.ids import new_id
from controller.policy import Policy, compile_selector, parse_rules
from controller.store import triggers
from controller.store.documents import policy_doc
from controller.store.inventory import ATTRIBUTE, Context
from controller.store.repo import audit, require_unique
from controller.store.tables import PolicyRevisionRow, PolicyRow

Fields = Mapping[str, Any]
_compiled: dict[tuple[str, int], Policy] = {}


def _validated(fields: Fields) -> dict[str, Any]:
    """Compile the selector and parse every rule; store rules in canonical form with ids."""
    values = dict(fields)
    if "selector" in values:
        values["selector"] = (values["selector"] or "").strip() or "true"
        compile_selector(values["selector"])
    if "rules" in values:
        values["rules"] = [rule.document() for rule in parse_rules(values["rules"])]
    return values


def _revision(ctx: Context, row: PolicyRow, action: str) -> None:
    ctx.session.add(
        PolicyRevisionRow(
            id=new_id(),
            policy_id=row.id,
            revision=row.revision,
            action=action,
            document=_jsonable(policy_doc(row)),
            created_by=ctx.actor.name,
            created_at=ctx.now,
        )
    )


def _jsonable(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in doc.items()}


def create_policy(ctx: Context, fields: Fields) -> PolicyRow:
    values = _validated({"selector": "true", "rules": [], **fields})
    require_unique(ctx.session, PolicyRow, ("body", "name"), PolicyRow.name == values["name"])
    row = PolicyRow(id=new_id(), name=values["name"], created_at=ctx.now, updated_at=ctx.now, revision=1)
    for name, value in values.items():
        setattr(row, ATTRIBUTE.get(name, name), value)
    ctx.session.add(row)
    _revision(ctx, row, "create")
    audit(ctx.session, ctx.actor, ctx.now, "create", "policy", row.id, None, policy_doc(row))
    triggers.policy_changed(ctx.session, [row.selector], [row.enabled])
    return row


def update_policy(ctx: Context, row: PolicyRow, fields: Fields) -> PolicyRow:
    """PATCH (some fields) or PUT (all fields): either way a new revision if anything changed."""
    values = _validated(fields)
    if "name" in values:
        require_unique(ctx.session, PolicyRow, ("body", "name"), PolicyRow.name == values["name"], exclude_id=row.id)
    before = policy_doc(row)
    for name, value in values.items():
        setattr(row, ATTRIBUTE.get(name, name), value)
    if policy_doc(row) == before:
        return row
    row.revision += 1
    row.updated_at = ctx.now
    ctx.session.add(row)
    _revision(ctx, row, "update")
    audit(ctx.session, ctx.actor, ctx.now, "update", "policy", row.id, before, policy_doc(row))
    triggers.policy_changed(ctx.session, [before["selector"], row.selector], [before["enabled"], row.enabled])
    return row


def delete_policy(ctx: Context, row: PolicyRow) -> None:
    row.revision += 1
    _revision(ctx, row, "delete")
    audit(ctx.session, ctx.actor, ctx.now, "delete", "policy", row.id, policy_doc(row), None)
    triggers.policy_changed(ctx.session, [row.selector], [row.enabled])
    ctx.session.delete(row)


def compiled(row: PolicyRow) -> Policy:
    key = (row.id, row.revision)
    policy = _compiled.get(key)
    if policy is None:
        policy = Policy(
            id=row.id,
            name=row.name,
            revision=row.revision,
            priority=row.priority,
            enabled=row.enabled,
            selector=compile_selector(row.selector),
            rules=parse_rules(row.rules),
        )
        if len(_compiled) > 10_000:
            _compiled.clear()
        _compiled[key] = policy
    return policy


_ENABLED = select(PolicyRow.id, PolicyRow.revision).where(col(PolicyRow.enabled) == true())
_BY_ID = select(PolicyRow).where(col(PolicyRow.id).in_(bindparam("ids", expanding=True)))


def load_policies(session: Session) -> tuple[Policy, ...]:
    """The enabled policies, compiled. Only their (id, revision) pairs are read on every call (the
    decision of one gate call or explain reads them); rows are read whole for revisions not compiled yet."""
    enabled = session.execute(_ENABLED).all()
    found = {policy_id: _compiled.get((policy_id, revision)) for policy_id, revision in enabled}
    missing = [policy_id for policy_id, policy in found.items() if policy is None]
    if missing:
        found |= {row.id: compiled(row) for row in session.exec(_BY_ID, params={"ids": missing}) if row.enabled}
    return tuple(policy for policy_id, _ in enabled if (policy := found.get(policy_id)) is not None)
