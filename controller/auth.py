"""Who may do what: roles, principals and token hashing (SPEC §8).

Tokens are high-entropy random secrets, so a plain SHA-256 is the right hash: it is what the
database stores, and a leaked table reveals no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    APPROVER = "approver"
    AGENT = "agent"
    VIEWER = "viewer"


class Capability(StrEnum):
    READ = "read"  # inventory, targets, decisions, policies, audit
    WRITE = "write"  # inventory, policies, overrides, redeploys
    APPROVE = "approve"
    AGENT = "agent"  # own jobs and the gate
    ADMIN = "admin"  # tokens


GRANTS: dict[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability),
    Role.OPERATOR: frozenset({Capability.READ, Capability.WRITE}),
    Role.APPROVER: frozenset({Capability.READ, Capability.APPROVE}),
    Role.AGENT: frozenset({Capability.AGENT}),
    Role.VIEWER: frozenset({Capability.READ}),
}

TOKEN_PREFIX = "rg_"


@dataclass(frozen=True)
class Principal:
    token_id: str
    name: str
    role: Role
    job_agent_id: str | None = None

    def can(self, capability: Capability) -> bool:
        return capability in GRANTS[self.role]


SYSTEM = Principal(token_id="system", name="system", role=Role.ADMIN)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)
