"""Property: ``eligible_at`` is exactly the first instant, from ``now`` on, at which ``decide`` says go.

Random small worlds mix approvals (some expiring, some vetoes), allow and deny windows, cooldowns,
gradual rollouts, retry rules, overrides, warn rules, disabled policies and job histories. The ETA
is checked against the decision itself: go at ``eligible_at``, and not go at every
``next_evaluation_at`` checkpoint nor at sampled instants before it. Without an ETA, a waiting
decision names what it waits for and no later checkpoint is go. A no-go holds to the same rule: it
has an ETA only where time alone turns it into go (the desired version's job is refused and an
allowance of its gates lapses; see test_decision.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.decision import Decision, Outcome, decide
from controller.facts import ApprovalFact, ApprovalStatus, JobFact, JobStatus, VersionFact, VersionStatus
from controller.policy import Policy
from controller.rules.verdict import Status
from controller.snapshot import OverrideFact, Snapshot
from tests.unit.test_decision import (
    OFFICE_HOURS,
    PROD,
    T0,
    TARGET,
    job,
    override,
    policy,
    version,
    world,
)

HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)
HORIZON = timedelta(days=30)
# Facts are stamped no later than ``now``, as in the controller: a record stamped later is an event
# that happens later, and the ETA is "if nothing else happens". (Later-stamped approvals are covered
# by test_a_veto_lifted_by_a_later_stamped_approval_gives_an_eta.)
LATER_STAMPS_MINUTES = 0

WINDOWS = [
    OFFICE_HOURS,
    {"rrule": "FREQ=DAILY;BYHOUR=2", "durationMinutes": 120},
    {"rrule": "FREQ=WEEKLY;BYDAY=SA;BYHOUR=0", "durationMinutes": 2880, "timezone": "Europe/Berlin",
     "allowWindow": False},
]

rules = st.one_of(
    st.builds(
        lambda n, expiry, self_ok: {"anyApproval": {"minApprovals": n, "allowSelfApproval": self_ok}
                                    | ({"expiresAfterMinutes": expiry} if expiry else {})},
        st.integers(1, 2), st.sampled_from([None, 30, 240, 1440]), st.booleans(),
    ),
    st.sampled_from(WINDOWS).map(lambda w: {"deploymentWindow": w}),
    st.sampled_from([0, 1800, 7200, 86400]).map(lambda s: {"versionCooldown": {"intervalSeconds": s}}),
    st.builds(
        lambda kind, interval: {"gradualRollout": {"rolloutType": kind, "timeScaleInterval": interval}},
        st.sampled_from(["linear", "linear-normalized"]), st.sampled_from([0, 600, 3600, 3 * 3600]),
    ),
    st.builds(
        lambda retries, backoff, strategy: {"retry": {"maxRetries": retries, "backoffSeconds": backoff,
                                                      "backoffStrategy": strategy}},
        st.integers(0, 2), st.sampled_from([0, 300, 3600]), st.sampled_from(["linear", "exponential"]),
    ),
)


@st.composite
def rule_objects(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = draw(rules)
    if draw(st.integers(0, 9)) == 0:
        rule = {**rule, "enforcement": "warn"}
    return rule


@st.composite
def policies(draw: st.DrawFn) -> list[Policy]:
    found = []
    for index in range(draw(st.integers(0, 3))):
        found.append(policy(
            f"p{index}",
            *draw(st.lists(rule_objects(), min_size=1, max_size=3)),
            priority=draw(st.integers(-1, 2)),
            enabled=draw(st.integers(0, 7)) > 0,
        ))
    return found


@st.composite
def approvals(draw: st.DrawFn, now: datetime) -> list[ApprovalFact]:
    return [
        ApprovalFact(
            draw(st.sampled_from(["alice", "bob", "carol", "ci"])),
            ApprovalStatus.REJECTED if draw(st.integers(0, 7)) == 0 else ApprovalStatus.APPROVED,
            now + timedelta(minutes=draw(st.integers(-20 * 60, LATER_STAMPS_MINUTES))),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]


@st.composite
def histories(draw: st.DrawFn, versions: list[VersionFact], now: datetime) -> list[JobFact]:
    """Jobs that started and ended before ``now``: maybe a current version, failures, an active job."""
    jobs: list[JobFact] = []
    ready = [v for v in versions if v.status is VersionStatus.READY]
    if ready and draw(st.booleans()):
        current = draw(st.sampled_from(ready))
        done_at = now - timedelta(minutes=draw(st.integers(1, 72 * 60)))
        jobs.append(job(current, JobStatus.SUCCESSFUL, done_at - 10 * timedelta(minutes=1), done_at))
    if ready and draw(st.booleans()):
        failed = draw(st.sampled_from(ready))
        for attempt in range(1, draw(st.integers(1, 3)) + 1):
            done_at = now - timedelta(minutes=draw(st.integers(1, 12 * 60)) + 60 * (3 - attempt))
            status = draw(st.sampled_from([JobStatus.FAILURE, JobStatus.LOST, JobStatus.CANCELLED]))
            jobs.append(job(failed, status, done_at - timedelta(minutes=1), done_at, attempt=attempt + 1))
    if ready and draw(st.integers(0, 9)) == 0:
        jobs.append(job(draw(st.sampled_from(ready)), JobStatus.IN_PROGRESS, now - HOUR, attempt=9))
    return jobs


@st.composite
def overrides(draw: st.DrawFn, versions: list[VersionFact], now: datetime) -> list[OverrideFact]:
    if draw(st.integers(0, 3)) > 0:
        return []
    return [override(
        draw(st.sampled_from(versions)),
        created_at=now - timedelta(minutes=draw(st.integers(0, 600))),
        expires_at=now + timedelta(minutes=draw(st.integers(1, 3 * 24 * 60))),
        rule_types=draw(st.sampled_from([None, ["anyApproval"], ["deploymentWindow", "versionCooldown"]])),
    )]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Snapshot, datetime]:
    now = T0 + timedelta(minutes=draw(st.integers(-3 * 24 * 60, 5 * 24 * 60)))
    statuses = st.sampled_from([VersionStatus.READY] * 5 + [VersionStatus.BUILDING])
    count = draw(st.integers(1, 3))
    versions = [
        version(f"{i + 1}.0.0", now - timedelta(hours=draw(st.integers(1, 48))) - (count - i) * 48 * HOUR,
                draw(statuses))
        for i in range(count)
    ]
    snap = world(
        versions=versions,
        policies=draw(policies()),
        jobs=draw(histories(versions, now)),
        approvals={(v, PROD): draw(approvals(now)) for v in versions},
        overrides=draw(overrides(versions, now)),
    )
    return snap, now


def outcome(snap: Snapshot, at: datetime) -> Outcome:
    return decide(snap, TARGET, at, explain=False).outcome


def checkpoints(snap: Snapshot, start: Decision, until: datetime) -> list[datetime]:
    """Every instant in (start, until) at which the controller would re-evaluate, in order."""
    found: list[datetime] = []
    at = start.next_evaluation_at
    while at is not None and at < until and len(found) < 400:
        found.append(at)
        at = decide(snap, TARGET, at, explain=False).next_evaluation_at
    return found


def blocking(decision: Decision) -> list[tuple[str, Status, datetime | None]]:
    verdicts = [rv for c in decision.candidates for rv in c.verdicts] + list(decision.job_verdicts)
    return [(rv.rule_type, rv.verdict.status, rv.verdict.next_check_at) for rv in verdicts if rv.blocking]


def lapsing_job_blocked_desired(decision: Decision, until: datetime) -> bool:
    focus = decision.focus
    return (
        decision.desired is not None
        and focus is not None
        and focus.version == decision.desired
        and any(rv.verdict.status is Status.DENIED for rv in decision.job_verdicts)
        and any(rv.blocking and rv.verdict.next_check_at is not None and rv.verdict.next_check_at <= until
                for rv in focus.verdicts)
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.lists(st.floats(0, 1, exclude_max=True), min_size=5, max_size=5))
def test_eligible_at_is_the_first_instant_at_which_the_decision_is_go(
    scenario: tuple[Snapshot, datetime], fractions: list[float]
) -> None:
    snap, now = scenario
    decision = decide(snap, TARGET, now)
    if decision.outcome is Outcome.GO:
        assert decision.eligible_at == now
        return
    # The outcome changes only when some verdict does, so the first go, if any, is at a checkpoint.
    ahead = checkpoints(snap, decision, now + HORIZON)
    first_go = next((at for at in ahead if outcome(snap, at) is Outcome.GO), None)
    eligible_at = decision.eligible_at
    if eligible_at is None:
        # Held by something that is not time: a waiting decision says what, and time alone never helps.
        if decision.outcome is Outcome.WAIT:
            assert decision.waiting_for, blocking(decision)
        assert first_go is None
        return
    if decision.outcome is Outcome.NO_GO:
        # A no-go turns into go by time alone only where the desired version cannot get a job and an
        # allowance of its gates lapses, so that an older version becomes desired.
        assert lapsing_job_blocked_desired(decision, eligible_at), (eligible_at, blocking(decision))
    assert eligible_at > now
    assert eligible_at == first_go or (first_go is None and eligible_at >= now + HORIZON), (eligible_at, first_go)
    assert outcome(snap, eligible_at) is Outcome.GO
    span = eligible_at - now
    sampled = [now + span * f for f in fractions]  # float products round: keep those before the ETA
    for at in [now, eligible_at - US, *(at for at in sampled if at < eligible_at)]:
        assert outcome(snap, at) is not Outcome.GO, at
