"""anyApproval: counting distinct approvers, veto, self-approval, expiry and its exact timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.facts import ApprovalFact, ApprovalStatus
from controller.rules.any_approval import AnyApprovalSpec, evaluate
from controller.rules.verdict import Status

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
TWO = AnyApprovalSpec(min_approvals=2)
TWO_FOR_AN_HOUR = AnyApprovalSpec(min_approvals=2, expires_after_minutes=60)


def ok(user: str, minutes: int = 0) -> ApprovalFact:
    return ApprovalFact(user=user, status=ApprovalStatus.APPROVED, created_at=T0 + minutes * MIN)


def no(user: str, minutes: int = 0) -> ApprovalFact:
    return ApprovalFact(user=user, status=ApprovalStatus.REJECTED, created_at=T0 + minutes * MIN)


@pytest.mark.parametrize(
    ("spec", "approvals", "now", "status", "reason", "message", "satisfied_at", "next_check_at"),
    [
        (TWO, [], T0, Status.PENDING, "AwaitingApproval", "0/2 approvals", None, None),
        (TWO, [ok("alice")], T0, Status.PENDING, "AwaitingApproval", "1/2 approvals", None, None),
        (
            TWO,
            [ok("alice", 5), ok("bob", 9), ok("dan", 7)],
            T0 + 10 * MIN,
            Status.ALLOWED,
            "Approved",
            "3/2 approvals",
            T0 + 7 * MIN,
            None,
        ),
        # One person counts once, and the latest record of a person wins.
        (
            TWO,
            [ok("alice"), ok("alice", 1)],
            T0 + 2 * MIN,
            Status.PENDING,
            "AwaitingApproval",
            "1/2 approvals",
            None,
            None,
        ),
        # Veto, then the vetoing user replaces the rejection with an approval.
        (
            TWO,
            [ok("alice"), no("bob", 1)],
            T0 + 2 * MIN,
            Status.DENIED,
            "ApprovalRejected",
            "rejected by bob",
            None,
            None,
        ),
        (
            TWO,
            [ok("alice"), no("bob", 1), ok("bob", 3)],
            T0 + 5 * MIN,
            Status.ALLOWED,
            "Approved",
            "2/2 approvals",
            T0 + 3 * MIN,
            None,
        ),
        (
            TWO,
            [no("bob", 3), ok("bob", 1), no("carol")],
            T0 + 5 * MIN,
            Status.DENIED,
            "ApprovalRejected",
            "rejected by bob, carol",
            None,
            None,
        ),
        # The version's author does not count...
        (
            TWO,
            [ok("carol"), ok("alice")],
            T0,
            Status.PENDING,
            "AwaitingApproval",
            "1/2 approvals",
            None,
            None,
        ),
        # ...unless self-approval is allowed.
        (
            AnyApprovalSpec(min_approvals=2, allow_self_approval=True),
            [ok("carol"), ok("alice", 1)],
            T0 + MIN,
            Status.ALLOWED,
            "Approved",
            "2/2 approvals",
            T0 + MIN,
            None,
        ),
    ],
)
def test_any_approval(
    spec: AnyApprovalSpec,
    approvals: list[ApprovalFact],
    now: datetime,
    status: Status,
    reason: str,
    message: str,
    satisfied_at: datetime | None,
    next_check_at: datetime | None,
) -> None:
    verdict = evaluate(spec, approvals=approvals, version_created_by="carol", now=now)
    assert (verdict.status, verdict.reason, verdict.message) == (status, reason, message)
    assert (verdict.satisfied_at, verdict.next_check_at) == (satisfied_at, next_check_at)


def test_pending_reports_k_of_n() -> None:
    verdict = evaluate(TWO, approvals=[ok("alice")], version_created_by=None, now=T0)
    assert verdict.details == {"approved": 1, "required": 2}


# Three approvals an hour long, N=2: live 2 from +10 until the second-oldest lapses at +70.
EXPIRING = [ok("alice", 0), ok("bob", 10), ok("dan", 20)]


@pytest.mark.parametrize(
    ("now", "status", "message", "satisfied_at", "next_check_at"),
    [
        # Asked about the past: later records did not exist yet, and the first of them may change it.
        (T0 + 5 * MIN, Status.PENDING, "1/2 approvals", None, T0 + 10 * MIN),
        (T0 + 30 * MIN, Status.ALLOWED, "3/2 approvals", T0 + 10 * MIN, T0 + 70 * MIN),
        # alice lapsed at +60; bob and dan still carry the count, so nothing changed.
        (T0 + 65 * MIN, Status.ALLOWED, "2/2 approvals", T0 + 10 * MIN, T0 + 70 * MIN),
        (
            T0 + 70 * MIN - timedelta(microseconds=1),
            Status.ALLOWED,
            "2/2 approvals",
            T0 + 10 * MIN,
            T0 + 70 * MIN,
        ),
        # created_at + expiry <= now is expired; lapsing can never make it allowed again.
        (T0 + 70 * MIN, Status.PENDING, "1/2 approvals", None, None),
        (T0 + 80 * MIN, Status.PENDING, "0/2 approvals", None, None),
    ],
)
def test_expiry(
    now: datetime, status: Status, message: str, satisfied_at: datetime | None, next_check_at: datetime | None
) -> None:
    verdict = evaluate(TWO_FOR_AN_HOUR, approvals=EXPIRING, version_created_by=None, now=now)
    assert (verdict.status, verdict.message) == (status, message)
    assert (verdict.satisfied_at, verdict.next_check_at) == (satisfied_at, next_check_at)


def test_satisfied_at_is_when_the_count_last_reached_n() -> None:
    # alice (lapsed at +60) and bob made two at +30; dan joined at +50: satisfied since +30, not +50.
    approvals = [ok("alice", 0), ok("bob", 30), ok("dan", 50)]
    verdict = evaluate(TWO_FOR_AN_HOUR, approvals=approvals, version_created_by=None, now=T0 + 65 * MIN)
    assert (verdict.satisfied_at, verdict.next_check_at) == (T0 + 30 * MIN, T0 + 90 * MIN)
    # With a gap in between, it is the N-th approval after the gap.
    approvals = [ok("alice", 0), ok("bob", 70), ok("dan", 80)]
    verdict = evaluate(TWO_FOR_AN_HOUR, approvals=approvals, version_created_by=None, now=T0 + 85 * MIN)
    assert verdict.satisfied_at == T0 + 80 * MIN


@pytest.mark.parametrize(
    "fields",
    [
        {"minApprovals": 0},
        {"expiresAfterMinutes": 0},
        {"allowSelfApproval": "maybe"},
        {"minApprovals": 1, "x": 1},
    ],
)
def test_invalid_specs_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AnyApprovalSpec.model_validate(fields)


def test_camel_case_round_trip() -> None:
    spec = AnyApprovalSpec.model_validate(
        {"minApprovals": 2, "allowSelfApproval": True, "expiresAfterMinutes": 30}
    )
    assert AnyApprovalSpec.model_validate(spec.model_dump(by_alias=True)) == spec


records = st.lists(
    st.builds(
        ApprovalFact,
        user=st.sampled_from(["alice", "bob", "carol", "dan", "erin"]),
        status=st.sampled_from(list(ApprovalStatus)),
        created_at=st.integers(0, 300).map(lambda m: T0 + m * MIN),
    ),
    max_size=8,
)


@given(
    approvals=records,
    need=st.integers(1, 3),
    expiry=st.one_of(st.none(), st.integers(1, 120)),
    at=st.integers(300, 500).map(lambda m: T0 + m * MIN),
)
def test_the_verdict_holds_until_next_check_at_and_changes_then(
    approvals: list[ApprovalFact], need: int, expiry: int | None, at: datetime
) -> None:
    spec = AnyApprovalSpec(min_approvals=need, expires_after_minutes=expiry)
    verdict = evaluate(spec, approvals=approvals, version_created_by="carol", now=at)
    if verdict.next_check_at is None:
        later = evaluate(spec, approvals=approvals, version_created_by="carol", now=at + timedelta(days=30))
        assert later.status == verdict.status or (verdict.status == Status.ALLOWED and expiry is None)
        return
    before = evaluate(
        spec,
        approvals=approvals,
        version_created_by="carol",
        now=verdict.next_check_at - timedelta(microseconds=1),
    )
    assert (before.status, before.satisfied_at) == (verdict.status, verdict.satisfied_at)
    after = evaluate(spec, approvals=approvals, version_created_by="carol", now=verdict.next_check_at)
    assert after.status != verdict.status
