"""What a rule says about one (release target, candidate version) at one instant.

Kubernetes-style: ``reason`` is a CamelCase machine code, ``message`` is for people. ``pending``
waits on something that will happen (time, an approval, an upstream success); ``denied`` will not
change without a change in the world. ``next_check_at`` is the earliest instant at which the verdict
could change by the passage of time alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple


class Status(StrEnum):
    ALLOWED = "allowed"
    PENDING = "pending"
    DENIED = "denied"


_NO_DETAILS: Mapping[str, Any] = MappingProxyType({})


class Verdict(NamedTuple):
    """Immutable; a tuple rather than a frozen dataclass because a pass over thousands of targets
    builds several per target, and a tuple is built four times faster. Change one with ``_replace``."""

    status: Status
    reason: str
    message: str
    details: Mapping[str, Any] = _NO_DETAILS
    satisfied_at: datetime | None = None
    next_check_at: datetime | None = None

    @classmethod
    def allowed(cls, reason: str, message: str, details: Mapping[str, Any] = _NO_DETAILS,
                satisfied_at: datetime | None = None, next_check_at: datetime | None = None) -> Verdict:
        return cls(Status.ALLOWED, reason, message, details, satisfied_at, next_check_at)

    @classmethod
    def pending(cls, reason: str, message: str, details: Mapping[str, Any] = _NO_DETAILS,
                satisfied_at: datetime | None = None, next_check_at: datetime | None = None) -> Verdict:
        return cls(Status.PENDING, reason, message, details, satisfied_at, next_check_at)

    @classmethod
    def denied(cls, reason: str, message: str, details: Mapping[str, Any] = _NO_DETAILS,
               satisfied_at: datetime | None = None, next_check_at: datetime | None = None) -> Verdict:
        return cls(Status.DENIED, reason, message, details, satisfied_at, next_check_at)
