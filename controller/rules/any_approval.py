"""``anyApproval``: a version needs N approvals from distinct people for an environment.

Why it exists: a person signs off before a version reaches an environment. Any rejection is a
veto until the person who rejected replaces it; the version's author does not count unless
self-approval is allowed; with ``expiresAfterMinutes`` an approval counts only that long.

Timing, chosen to be exact: while allowed, ``next_check_at`` is the instant the count of live
approvals drops below N (when the (k−N+1)-th oldest counted approval lapses), not when the oldest
lapses, since the verdict does not change before then. ``satisfied_at`` is the instant since
which the count has been continuously ≥ N, computed from every approval's [created, lapse)
interval; it is the N-th counted approval when none lapsed meanwhile, and it stays put when an
older approval lapses but others still carry the count, so a rollout started from it does not
move. A record stamped after ``now`` did not exist yet: it is ignored, and the earliest such
record is a change point for ``next_check_at`` (this matters for decisions asked about the past).

Must not: read a clock, or count one person twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from controller.facts import ApprovalFact, ApprovalStatus
from controller.rules.verdict import Verdict


class AnyApprovalSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    min_approvals: int = Field(default=1, ge=1, le=1000)
    allow_self_approval: bool = False
    expires_after_minutes: int | None = Field(default=None, ge=1, le=366 * 24 * 60)

    @property
    def expiry(self) -> timedelta | None:
        return None if self.expires_after_minutes is None else timedelta(minutes=self.expires_after_minutes)


def evaluate(
    spec: AnyApprovalSpec, *, approvals: Sequence[ApprovalFact], version_created_by: str | None, now: datetime
) -> Verdict:
    verdict = _evaluate_present([a for a in approvals if a.created_at <= now], spec, version_created_by, now)
    upcoming = min((a.created_at for a in approvals if a.created_at > now), default=None)
    if upcoming is not None and (verdict.next_check_at is None or upcoming < verdict.next_check_at):
        return verdict._replace(next_check_at=upcoming)
    return verdict


def _evaluate_present(
    approvals: Sequence[ApprovalFact], spec: AnyApprovalSpec, version_created_by: str | None, now: datetime
) -> Verdict:
    latest = _latest_per_user(approvals)
    eligible = [
        a.created_at
        for a in latest
        if a.status == ApprovalStatus.APPROVED and (spec.allow_self_approval or a.user != version_created_by)
    ]
    expiry = spec.expiry
    live = sorted(at for at in eligible if expiry is None or at + expiry > now)
    need, have = spec.min_approvals, len(live)
    details: dict[str, Any] = {"approved": have, "required": need}
    rejected = sorted(a.user for a in latest if a.status == ApprovalStatus.REJECTED)
    if rejected:  # a veto: the count is kept for whoever looks, but no number of approvals lifts it
        return Verdict.denied(
            "ApprovalRejected", f"rejected by {', '.join(rejected)}", details=details | {"rejectedBy": rejected}
        )
    if have < need:
        return Verdict.pending("AwaitingApproval", f"{have}/{need} approvals", details=details)
    lapse_at = None if expiry is None else live[have - need] + expiry
    since = live[need - 1] if expiry is None else _satisfied_since(eligible, expiry, need, now)
    return Verdict.allowed(
        "Approved", f"{have}/{need} approvals", details=details, satisfied_at=since, next_check_at=lapse_at
    )


def _latest_per_user(approvals: Sequence[ApprovalFact]) -> list[ApprovalFact]:
    latest: dict[str, ApprovalFact] = {}
    for approval in approvals:
        kept = latest.get(approval.user)
        if kept is None or approval.created_at >= kept.created_at:
            latest[approval.user] = approval
    return list(latest.values())


def _satisfied_since(created: Sequence[datetime], expiry: timedelta, need: int, now: datetime) -> datetime:
    """Start of the current stretch with ≥ ``need`` live approvals (the caller knows it holds now)."""
    deltas: dict[datetime, int] = {}
    for at in created:
        deltas[at] = deltas.get(at, 0) + 1
        if at + expiry <= now:
            deltas[at + expiry] = deltas.get(at + expiry, 0) - 1
    count, since = 0, now
    for at in sorted(deltas):
        before, count = count, count + deltas[at]
        if before < need <= count:
            since = at
    return since
