"""Tokens and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api.schemas.base import Body, Name, Schema
from controller.auth import Role


class TokenCreate(Body):
    name: Name
    role: Role
    job_agent_id: str | None = None


class TokenPublic(Schema):
    id: str
    name: str
    role: Role
    job_agent_id: str | None
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str


class AuditPublic(Schema):
    seq: int
    at: datetime
    actor: str
    actor_role: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
