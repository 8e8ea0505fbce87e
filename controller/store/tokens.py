"""API tokens: bootstrap, creation, authentication and revocation. Only hashes are stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from controller.auth import Principal, Role, hash_token, new_secret
from controller.errors import Invalid
from controller.ids import new_id
from controller.store.documents import token_doc
from controller.store.inventory import Context
from controller.store.repo import audit
from controller.store.tables import JobAgentRow, TokenRow

BOOTSTRAP_NAME = "admin"


def bootstrap_admin(session: Session, secret: str | None, now: datetime) -> str | None:
    """Make sure an admin can log in. Returns a generated secret, to be shown once, if one was made."""
    if secret:
        if session.exec(select(TokenRow).where(TokenRow.token_hash == hash_token(secret))).first() is None:
            session.add(_row(BOOTSTRAP_NAME, Role.ADMIN, None, secret, now))
        return None
    active_admin = select(TokenRow).where(TokenRow.role == Role.ADMIN.value, col(TokenRow.revoked_at).is_(None))
    if session.exec(active_admin).first() is not None:
        return None
    generated = new_secret()
    session.add(_row(BOOTSTRAP_NAME, Role.ADMIN, None, generated, now))
    return generated


def _row(name: str, role: Role, job_agent_id: str | None, secret: str, now: datetime) -> TokenRow:
    return TokenRow(
        id=new_id(), name=name, role=role.value, job_agent_id=job_agent_id, token_hash=hash_token(secret),
        created_at=now,
    )


def create_token(ctx: Context, name: str, role: Role, job_agent_id: str | None) -> tuple[TokenRow, str]:
    if role is Role.AGENT and job_agent_id is None:
        raise Invalid.one(("body", "jobAgentId"), "an agent token must be bound to a job agent", "missing")
    if role is not Role.AGENT and job_agent_id is not None:
        raise Invalid.one(("body", "jobAgentId"), "only agent tokens are bound to a job agent")
    if job_agent_id is not None and ctx.session.get(JobAgentRow, job_agent_id) is None:
        raise Invalid.one(("body", "jobAgentId"), f"job agent {job_agent_id!r} does not exist", "reference")
    secret = new_secret()
    row = _row(name, role, job_agent_id, secret, ctx.now)
    ctx.session.add(row)
    ctx.session.flush()
    audit(ctx.session, ctx.actor, ctx.now, "create", "token", row.id, None, token_doc(row))
    return row, secret


def revoke_token(ctx: Context, row: TokenRow) -> None:
    if row.revoked_at is not None:
        return
    before = token_doc(row)
    row.revoked_at = ctx.now
    ctx.session.add(row)
    audit(ctx.session, ctx.actor, ctx.now, "revoke", "token", row.id, before, token_doc(row))


_BY_HASH = select(TokenRow.id, TokenRow.name, TokenRow.role, TokenRow.job_agent_id).where(
    TokenRow.token_hash == bindparam("hash"), col(TokenRow.revoked_at).is_(None))


def authenticate(session: Session, secret: str) -> Principal | None:
    """Every request runs this: one prebuilt column query, no ORM row."""
    row = session.connection().execute(_BY_HASH, {"hash": hash_token(secret)}).first()
    if row is None:
        return None
    return Principal(token_id=row.id, name=row.name, role=Role(row.role), job_agent_id=row.job_agent_id)
