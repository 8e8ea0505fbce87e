"""Immutable facts that the pure core evaluates.

The store reads rows and turns them into these frozen values; selectors, rule evaluators and the
decision are functions of (facts, now). Nothing here touches a database or a clock.

Entity documents (``resource``, ``environment``, ``deployment``, ``version``) are the entity's
JSON in camelCase, exactly what CEL expressions see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

Document = Mapping[str, Any]


class JobStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "inProgress"
    ACTION_REQUIRED = "actionRequired"
    SUCCESSFUL = "successful"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    INVALID_JOB_AGENT = "invalidJobAgent"
    LOST = "lost"

    @property
    def active(self) -> bool:
        return self in ACTIVE_JOB_STATUSES


ACTIVE_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.IN_PROGRESS, JobStatus.ACTION_REQUIRED})


class VersionStatus(StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"
    REJECTED = "rejected"
    PAUSED = "paused"


class ApprovalStatus(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class VersionFact:
    id: str
    deployment_id: str
    tag: str
    status: VersionStatus
    created_at: datetime
    created_by: str | None
    doc: Document = field(default_factory=dict, compare=False)


class JobFact(NamedTuple):
    """Immutable like the frozen dataclasses here, but a tuple: a pass builds one per job, tens of
    thousands, and a tuple is built about four times faster."""

    id: str
    target_id: str
    version_id: str
    status: JobStatus
    attempt: int
    created_at: datetime
    completed_at: datetime | None = None
    # None: no verification run; otherwise "running", "passed", "failed" or "inconclusive" (the worst
    # of the job's runs), and when it passed.
    verification: str | None = None
    verified_at: datetime | None = None


@dataclass(frozen=True)
class ApprovalFact:
    user: str
    status: ApprovalStatus
    created_at: datetime


class TargetFact(NamedTuple):
    """A tuple for the reason JobFact is: a snapshot holds every target of its deployments."""

    id: str
    resource_id: str
    environment_id: str
    deployment_id: str
