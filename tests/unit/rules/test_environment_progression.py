"""environmentProgression: k of N upstream successes, soak, maximum age, AND/OR, and exact timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.cel import Doc
from controller.facts import JobFact, JobStatus
from controller.rules.environment_progression import (
    DependencyEnvironment,
    EnvironmentProgressionSpec,
    evaluate,
)
from controller.rules.verdict import Status

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
TICK = timedelta(microseconds=1)
STAGING = "environment.name == 'staging'"
UPSTREAM = "environment.name in ['staging', 'qa']"


def job(
    target: str, minutes: int, status: JobStatus = JobStatus.SUCCESSFUL, verification: str | None = None,
    verified: int | None = None,
) -> JobFact:
    """A job of the candidate version on ``target`` that ended at T0 + ``minutes`` (verified at T0 + ``verified``)."""
    return JobFact(
        id=f"{target}-{minutes}-{status}-{verification}", target_id=target, version_id="v2", status=status,
        attempt=1, created_at=T0 + (minutes - 5) * MIN, completed_at=T0 + minutes * MIN,
        verification=verification, verified_at=None if verified is None else T0 + verified * MIN,
    )  # fmt: skip


def succeeded(*minutes: int | None) -> dict[str, list[JobFact]]:
    """One target per argument: it succeeded at T0 + minutes, or has no job (None)."""
    return {f"t{i}": [] if m is None else [job(f"t{i}", m)] for i, m in enumerate(minutes)}


def env(
    name: str, target_jobs: dict[str, list[JobFact]] | None = None, **metadata: str
) -> DependencyEnvironment:
    return DependencyEnvironment(
        Doc({"id": f"e-{name}", "name": name, "metadata": metadata}), target_jobs or {}
    )


def spec(selector: str = STAGING, **fields: Any) -> EnvironmentProgressionSpec:
    return EnvironmentProgressionSpec.model_validate({"dependsOnEnvironmentSelector": selector, **fields})


HALF_SOAK_30 = spec(minimumSuccessPercentage=50, minimumSoakTimeMinutes=30)
ALL = spec()
AGED = spec(minimumSoakTimeMinutes=30, maximumAgeHours=2)
VERIFIED = spec(requireVerificationPassed=True)
SKIPPED_OK = spec(successStatuses=["successful", "skipped"])


@pytest.mark.parametrize(
    ("rule", "target_jobs", "now", "status", "reason", "satisfied_at", "next_check_at"),
    [
        # 50% of 4 is k=2: the 2nd success (+10) plus 30 minutes of soak.
        (HALF_SOAK_30, succeeded(0, 10, 20, None), T0 + 25 * MIN, Status.PENDING, "SoakTime", None,
         T0 + 40 * MIN),
        (HALF_SOAK_30, succeeded(20, None, 0, 10), T0 + 40 * MIN - TICK, Status.PENDING, "SoakTime", None,
         T0 + 40 * MIN),
        (HALF_SOAK_30, succeeded(0, 10, 20, None), T0 + 40 * MIN, Status.ALLOWED, "ProgressionSatisfied",
         T0 + 40 * MIN, None),
        (HALF_SOAK_30, succeeded(0, None, None, None), T0 + 90 * MIN, Status.PENDING,
         "AwaitingUpstreamSuccess", None, None),
        # 100% of 3 is 3, not 4: all three, satisfied at the last one.
        (ALL, succeeded(0, 10, None), T0 + HOUR, Status.PENDING, "AwaitingUpstreamSuccess", None, None),
        (ALL, succeeded(0, 10, 5), T0 + HOUR, Status.ALLOWED, "ProgressionSatisfied", T0 + 10 * MIN, None),
        (spec(minimumSuccessPercentage=34), succeeded(7, None, 3), T0 + HOUR, Status.ALLOWED,
         "ProgressionSatisfied", T0 + 7 * MIN, None),
        # No targets of this deployment in the environment: passes vacuously, since always.
        (ALL, {}, T0, Status.ALLOWED, "ProgressionSatisfied", None, None),
        # Maximum age: stale strictly after tk + 2h, so the allowed verdict changes one microsecond later.
        (AGED, succeeded(0), T0 + 30 * MIN, Status.ALLOWED, "ProgressionSatisfied", T0 + 30 * MIN,
         T0 + 2 * HOUR + TICK),
        (AGED, succeeded(0), T0 + 2 * HOUR, Status.ALLOWED, "ProgressionSatisfied", T0 + 30 * MIN,
         T0 + 2 * HOUR + TICK),
        (AGED, succeeded(0), T0 + 2 * HOUR + TICK, Status.DENIED, "StaleUpstreamSuccess", None, None),
        (AGED, succeeded(0), T0 + 10 * MIN, Status.PENDING, "SoakTime", None, T0 + 30 * MIN),
        # A target's success time is its earliest successful completion (a redeploy does not refresh it).
        (AGED, {"t0": [job("t0", 0), job("t0", 150)]}, T0 + 3 * HOUR, Status.DENIED, "StaleUpstreamSuccess",
         None, None),
        # Failures, cancellations and running jobs do not count.
        (ALL, {"t0": [job("t0", 0, JobStatus.FAILURE), job("t0", 5, JobStatus.CANCELLED),
                      job("t0", 6, JobStatus.LOST), job("t0", 7, JobStatus.IN_PROGRESS)]},
         T0 + HOUR, Status.PENDING, "AwaitingUpstreamSuccess", None, None),
        (ALL, {"t0": [job("t0", 0, JobStatus.FAILURE), job("t0", 9)]}, T0 + HOUR, Status.ALLOWED,
         "ProgressionSatisfied", T0 + 9 * MIN, None),
        # Custom success statuses.
        (ALL, {"t0": [job("t0", 4, JobStatus.SKIPPED)]}, T0 + HOUR, Status.PENDING, "AwaitingUpstreamSuccess",
         None, None),
        (SKIPPED_OK, {"t0": [job("t0", 4, JobStatus.SKIPPED)]}, T0 + HOUR, Status.ALLOWED,
         "ProgressionSatisfied", T0 + 4 * MIN, None),
        # With verification required, only a passed verification counts.
        (VERIFIED, {"t0": [job("t0", 1), job("t0", 2, verification="running"),
                           job("t0", 3, verification="failed"), job("t0", 4, verification="inconclusive")]},
         T0 + HOUR, Status.PENDING, "AwaitingUpstreamSuccess", None, None),
        (VERIFIED, {"t0": [job("t0", 1), job("t0", 4, verification="passed")]}, T0 + HOUR, Status.ALLOWED,
         "ProgressionSatisfied", T0 + 4 * MIN, None),
        # ... and it counts from when the verification passed, not from when the job ended.
        (VERIFIED, {"t0": [job("t0", 4, verification="passed", verified=10)]}, T0 + HOUR, Status.ALLOWED,
         "ProgressionSatisfied", T0 + 10 * MIN, None),
        (VERIFIED, {"t0": [job("t0", 4, verification="passed", verified=10)]}, T0 + 7 * MIN, Status.PENDING,
         "AwaitingUpstreamSuccess", None, T0 + 10 * MIN),
        (ALL, {"t0": [job("t0", 1), job("t0", 4, verification="passed")]}, T0 + HOUR, Status.ALLOWED,
         "ProgressionSatisfied", T0 + MIN, None),
        # Asked about the past: a success after ``now`` had not happened, and is when the count reaches k.
        (ALL, succeeded(0, 60), T0 + 30 * MIN, Status.PENDING, "AwaitingUpstreamSuccess", None, T0 + HOUR),
    ],
)  # fmt: skip
def test_one_dependency_environment(
    rule: EnvironmentProgressionSpec, target_jobs: dict[str, list[JobFact]], now: datetime, status: Status,
    reason: str, satisfied_at: datetime | None, next_check_at: datetime | None,
) -> None:  # fmt: skip
    verdict = evaluate(
        rule, environments=[env("staging", target_jobs), env("production", succeeded(0))], now=now
    )
    assert (verdict.status, verdict.reason) == (status, reason)
    assert (verdict.satisfied_at, verdict.next_check_at) == (satisfied_at, next_check_at)
    assert [e["name"] for e in verdict.details["environments"]] == ["staging"]


# staging: allowed from +10 (soak 0) / +40 (soak 30); qa: succeeded at +20.
STAGING_DONE = env("staging", succeeded(10))
QA_WAITING = env("qa", succeeded(None))
QA_DONE = env("qa", succeeded(20))
EMPTY_QA = env("qa")


@pytest.mark.parametrize(
    ("fields", "envs", "now", "status", "reason", "satisfied_at", "next_check_at"),
    [
        ({}, [STAGING_DONE, QA_WAITING], T0 + HOUR, Status.PENDING, "AwaitingUpstreamSuccess", None, None),
        ({"requireAll": False}, [STAGING_DONE, QA_WAITING], T0 + HOUR, Status.ALLOWED, "ProgressionSatisfied",
         T0 + 10 * MIN, None),
        ({}, [STAGING_DONE, QA_DONE], T0 + HOUR, Status.ALLOWED, "ProgressionSatisfied", T0 + 20 * MIN, None),
        ({"requireAll": False}, [STAGING_DONE, QA_DONE], T0 + HOUR, Status.ALLOWED, "ProgressionSatisfied",
         T0 + 10 * MIN, None),
        # A vacuous pass is satisfied since always: it never delays AND, and makes OR satisfied since always.
        ({}, [STAGING_DONE, EMPTY_QA], T0 + HOUR, Status.ALLOWED, "ProgressionSatisfied", T0 + 10 * MIN,
         None),
        ({"requireAll": False}, [STAGING_DONE, EMPTY_QA], T0 + HOUR, Status.ALLOWED, "ProgressionSatisfied",
         None, None),
        # Soak 30, max age 1h at +45: staging allowed until +70 (+1 µs), qa soaking until +50.
        ({"minimumSoakTimeMinutes": 30, "maximumAgeHours": 1}, [STAGING_DONE, QA_DONE], T0 + 45 * MIN,
         Status.PENDING, "SoakTime", None, T0 + 50 * MIN),
        ({"minimumSoakTimeMinutes": 30, "maximumAgeHours": 1, "requireAll": False}, [STAGING_DONE, QA_DONE],
         T0 + 45 * MIN, Status.ALLOWED, "ProgressionSatisfied", T0 + 40 * MIN, T0 + 50 * MIN),
        ({"minimumSoakTimeMinutes": 30, "maximumAgeHours": 1}, [STAGING_DONE, QA_DONE], T0 + 55 * MIN,
         Status.ALLOWED, "ProgressionSatisfied", T0 + 50 * MIN, T0 + 70 * MIN + TICK),
        # At +75 staging is stale: AND is denied for good, OR still has qa until +80.
        ({"minimumSoakTimeMinutes": 30, "maximumAgeHours": 1}, [STAGING_DONE, QA_DONE], T0 + 75 * MIN,
         Status.DENIED, "StaleUpstreamSuccess", None, None),
        ({"minimumSoakTimeMinutes": 30, "maximumAgeHours": 1, "requireAll": False}, [STAGING_DONE, QA_DONE],
         T0 + 75 * MIN, Status.ALLOWED, "ProgressionSatisfied", T0 + 50 * MIN, T0 + 80 * MIN + TICK),
        ({"minimumSoakTimeMinutes": 30, "maximumAgeHours": 1, "requireAll": False}, [STAGING_DONE, QA_DONE],
         T0 + 80 * MIN + TICK, Status.DENIED, "StaleUpstreamSuccess", None, None),
        # Stale staging while qa soaks: AND denied; OR waits for qa's soak.
        ({"minimumSoakTimeMinutes": 30, "maximumAgeHours": 1}, [STAGING_DONE, env("qa", succeeded(70))],
         T0 + 75 * MIN, Status.DENIED, "StaleUpstreamSuccess", None, None),
        ({"minimumSoakTimeMinutes": 30, "maximumAgeHours": 1, "requireAll": False},
         [STAGING_DONE, env("qa", succeeded(70))], T0 + 75 * MIN, Status.PENDING, "SoakTime", None,
         T0 + 100 * MIN),
        # One awaiting success, one soaking: AND waits on the success, OR on the soak.
        ({"minimumSoakTimeMinutes": 30}, [STAGING_DONE, QA_WAITING], T0 + 15 * MIN, Status.PENDING,
         "AwaitingUpstreamSuccess", None, T0 + 40 * MIN),
        ({"minimumSoakTimeMinutes": 30, "requireAll": False}, [STAGING_DONE, QA_WAITING], T0 + 15 * MIN,
         Status.PENDING, "SoakTime", None, T0 + 40 * MIN),
    ],
)  # fmt: skip
def test_require_all_versus_any(
    fields: dict[str, Any], envs: list[DependencyEnvironment], now: datetime, status: Status, reason: str,
    satisfied_at: datetime | None, next_check_at: datetime | None,
) -> None:  # fmt: skip
    verdict = evaluate(spec(UPSTREAM, **fields), environments=envs, now=now)
    assert (verdict.status, verdict.reason) == (status, reason)
    assert (verdict.satisfied_at, verdict.next_check_at) == (satisfied_at, next_check_at)


def test_the_details_break_down_each_environment() -> None:
    envs = [env("staging", succeeded(0, 10, 20, None)), env("qa", succeeded(None, 5)), env("production")]
    rule = spec(UPSTREAM, minimumSuccessPercentage=50, minimumSoakTimeMinutes=30, maximumAgeHours=4)
    verdict = evaluate(rule, environments=envs, now=T0 + 25 * MIN)
    assert (verdict.status, verdict.reason) == (Status.PENDING, "SoakTime")
    assert verdict.next_check_at == T0 + 35 * MIN
    qa, staging = "qa: soaking until 2026-03-02T14:35:00Z", "staging: soaking until 2026-03-02T14:40:00Z"
    assert verdict.message == f"{qa}; {staging}"
    assert verdict.details == {
        "expression": UPSTREAM,
        "requireAll": True,
        "environments": [
            {"id": "e-qa", "name": "qa", "status": "pending", "reason": "SoakTime", "succeeded": 1,
             "required": 1, "total": 2, "kthSuccessAt": "2026-03-02T14:05:00Z",
             "soakUntil": "2026-03-02T14:35:00Z", "staleAfter": "2026-03-02T18:05:00Z"},
            {"id": "e-staging", "name": "staging", "status": "pending", "reason": "SoakTime", "succeeded": 3,
             "required": 2, "total": 4, "kthSuccessAt": "2026-03-02T14:10:00Z",
             "soakUntil": "2026-03-02T14:40:00Z", "staleAfter": "2026-03-02T18:10:00Z"},
        ],
    }  # fmt: skip


def test_awaiting_reports_counts() -> None:
    verdict = evaluate(ALL, environments=[env("staging", succeeded(0, None, 3))], now=T0 + HOUR)
    assert verdict.message == "staging: 2 of 3 targets succeeded, 3 required"
    (detail,) = verdict.details["environments"]
    counts = (detail["succeeded"], detail["required"], detail["total"], detail["kthSuccessAt"])
    assert counts == (2, 3, 3, None)


@pytest.mark.parametrize(
    "envs",
    [[], [env("production", succeeded(0))], [env("qa", succeeded(0)), env("dev")]],
)
def test_a_selector_matching_no_environment_denies(envs: list[DependencyEnvironment]) -> None:
    verdict = evaluate(ALL, environments=envs, now=T0)
    assert (verdict.status, verdict.reason) == (Status.DENIED, "NoDependencyEnvironments")
    assert verdict.message == f"no other environment of the system matches: {STAGING}"


def test_a_missing_key_means_not_a_dependency_and_is_reported() -> None:
    # SPEC §2: a missing key makes a selector not match; the diagnostic stays in the details.
    envs = [env("staging", succeeded(0), tier="pre"), env("sandbox")]
    verdict = evaluate(spec("environment.metadata['tier'] == 'pre'"), environments=envs, now=T0 + HOUR)
    assert (verdict.status, verdict.reason) == (Status.ALLOWED, "ProgressionSatisfied")
    assert [e["name"] for e in verdict.details["environments"]] == ["staging"]
    assert verdict.details["selectorErrors"] == [
        {"id": "e-sandbox", "name": "sandbox", "error": "no such member in mapping: 'tier'"}
    ]


def test_a_selector_erroring_everywhere_fails_closed() -> None:
    envs = [env("sandbox", succeeded(0))]
    verdict = evaluate(spec("environment.metadata['tier'] == 'pre'"), environments=envs, now=T0 + HOUR)
    assert (verdict.status, verdict.reason) == (Status.DENIED, "NoDependencyEnvironments")
    assert verdict.details["selectorErrors"][0]["error"] == "no such member in mapping: 'tier'"


@pytest.mark.parametrize(
    ("percentage", "total", "required"),
    [
        (100, 3, 3), (100, 1, 1), (50, 4, 2), (50, 3, 2), (34, 3, 2), (33.3, 3, 1), (66.7, 3, 3), (0, 5, 1),
        # Float traps: 7/100·100 and 0.1·3 in binary would round up to one too many.
        (7, 100, 7), (10, 30, 3), (14.5, 200, 29), (0.1, 1000, 1), (99.9, 1000, 999),
    ],
)  # fmt: skip
def test_required_count_is_exact(percentage: float, total: int, required: int) -> None:
    assert spec(minimumSuccessPercentage=percentage).required(total) == required


def test_ctrlplane_misspelt_soak_alias_is_accepted() -> None:
    rule = EnvironmentProgressionSpec.model_validate(
        {"dependsOnEnvironmentSelector": STAGING, "minimumSockTimeMinutes": 30}
    )
    assert rule.minimum_soak_time_minutes == 30
    assert rule.model_dump(by_alias=True)["minimumSoakTimeMinutes"] == 30
    assert EnvironmentProgressionSpec.model_validate(rule.model_dump(by_alias=True)) == rule


def test_defaults() -> None:
    assert spec().model_dump(by_alias=True) == {
        "dependsOnEnvironmentSelector": STAGING,
        "minimumSuccessPercentage": 100,
        "minimumSoakTimeMinutes": 0,
        "maximumAgeHours": None,
        "successStatuses": (JobStatus.SUCCESSFUL,),
        "requireVerificationPassed": False,
        "requireAll": True,
    }


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"dependsOnEnvironmentSelector": "environment.name =="}, "invalid CEL at line 1, column"),
        ({"dependsOnEnvironmentSelector": "true ||\n resource.kind == 'x'"},
         "line 2, column 2: undeclared reference to 'resource'"),
        ({"minimumSuccessPercentage": 101}, "less than or equal to 100"),
        ({"minimumSuccessPercentage": -1}, "greater than or equal to 0"),
        ({"minimumSuccessPercentage": True}, "valid number"),
        ({"minimumSuccessPercentage": "50"}, "valid number"),
        ({"minimumSuccessPercentage": float("nan")}, "finite number"),
        ({"minimumSoakTimeMinutes": -1}, "greater than or equal to 0"),
        ({"maximumAgeHours": 0}, "greater than or equal to 1"),
        ({"maximumAgeHours": 1, "minimumSoakTimeMinutes": 60}, "maximumAgeHours must exceed"),
        ({"successStatuses": []}, "at least 1 item"),
        ({"successStatuses": ["done"]}, "Input should be"),
        ({"successStatuses": ["successful", "inProgress"]}, "still running"),
        ({"minimumSoakTimeMinutes": 5, "minimumSockTimeMinutes": 5}, "Extra inputs"),
        ({"requireAll": "sometimes"}, "valid boolean"),
        ({"other": 1}, "Extra inputs"),
    ],
)  # fmt: skip
def test_invalid_specs_are_rejected(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        EnvironmentProgressionSpec.model_validate({"dependsOnEnvironmentSelector": STAGING, **fields})


def test_the_selector_is_required() -> None:
    with pytest.raises(ValidationError, match="Field required"):
        EnvironmentProgressionSpec.model_validate({"minimumSoakTimeMinutes": 5})


# Random worlds: three environments of up to four targets, successes over two hours.
successes = st.lists(st.one_of(st.none(), st.integers(0, 120)), max_size=4)
rules = st.builds(
    lambda pct, soak, age, any_: spec(UPSTREAM, minimumSuccessPercentage=pct, minimumSoakTimeMinutes=soak,
                                      maximumAgeHours=age, requireAll=not any_),
    st.sampled_from([0, 25, 50, 66.7, 100]), st.integers(0, 50), st.one_of(st.none(), st.integers(1, 3)),
    st.booleans(),
)  # fmt: skip


@given(rule=rules, staging=successes, qa=successes, at=st.integers(0, 300).map(lambda m: T0 + m * MIN))
def test_the_verdict_holds_until_next_check_at_and_changes_then(
    rule: EnvironmentProgressionSpec, staging: list[int | None], qa: list[int | None], at: datetime
) -> None:
    envs = [env("staging", succeeded(*staging)), env("qa", succeeded(*qa))]
    verdict = evaluate(rule, environments=envs, now=at)
    if verdict.next_check_at is None:
        later = evaluate(rule, environments=envs, now=at + timedelta(days=30))
        assert (later.status, later.reason) == (verdict.status, verdict.reason)
        return
    assert verdict.next_check_at > at
    assert evaluate(rule, environments=envs, now=verdict.next_check_at - TICK) == verdict
    assert evaluate(rule, environments=envs, now=verdict.next_check_at) != verdict
