"""What a rule says about one (release target, candidate version) at one instant.

Kubernetes-style: ``reason`` is a CamelCase machine code, ``message`` is for people. ``pending``
waits on something that will happen (time, an approval, an upstream success); ``denied`` will not
change without a change in the world. ``next_check_at`` is the earliest instant at which the verdict
could change by the passage of time alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    ALLOWED = "allowed"
    PENDING = "pending"
    DENIED = "denied"


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    satisfied_at: datetime | None = None
    next_check_at: datetime | None = None

    @classmethod
    def allowed(cls, reason: str, message: str, **kw: Any) -> Verdict:
        return cls(Status.ALLOWED, reason, message, **kw)

    @classmethod
    def pending(cls, reason: str, message: str, **kw: Any) -> Verdict:
        return cls(Status.PENDING, reason, message, **kw)

    @classmethod
    def denied(cls, reason: str, message: str, **kw: Any) -> Verdict:
        return cls(Status.DENIED, reason, message, **kw)
