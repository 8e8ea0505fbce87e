"""gradualRollout: stable per-version order, linear and normalized offsets, and exact timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controller.rules.gradual_rollout import GradualRolloutSpec, evaluate, rollout_positions
from controller.rules.verdict import Status

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
TARGETS = ["target-a", "target-b", "target-c"]
LINEAR = GradualRolloutSpec(rollout_type="linear", time_scale_interval=120)
NORMALIZED = GradualRolloutSpec(rollout_type="linear-normalized", time_scale_interval=120)


def rollout_at(spec: GradualRolloutSpec, target_id: str, targets: list[str] = TARGETS) -> datetime:
    verdict = evaluate(
        spec,
        target_id=target_id,
        version_id="v1",
        environment_target_ids=targets,
        start_at=T0,
        already_on_version=False,
        now=T0 - timedelta(days=1),
    )
    assert verdict.next_check_at is not None
    return verdict.next_check_at


@pytest.mark.parametrize(("spec", "offsets"), [(LINEAR, {0, 120, 240}), (NORMALIZED, {0, 40, 80})])
def test_offsets_for_three_targets(spec: GradualRolloutSpec, offsets: set[int]) -> None:
    assert {int((rollout_at(spec, t) - T0).total_seconds()) for t in TARGETS} == offsets


def test_the_order_is_a_stable_hash_of_target_and_version() -> None:
    # A golden value (sha256 of target id, NUL, version id: b=bd73…, a=d2fe…, c=de8e…): changing the scheme
    # would reshuffle every running rollout.
    assert rollout_positions(TARGETS, "v1") == rollout_positions(list(reversed(TARGETS)), "v1")
    assert rollout_positions(TARGETS, "v1") == {"target-b": 0, "target-a": 1, "target-c": 2}
    orders = {tuple(sorted(TARGETS, key=rollout_positions(TARGETS, f"v{i}").__getitem__)) for i in range(20)}
    assert len(orders) > 1  # versions shuffle differently


@pytest.mark.parametrize(
    ("now", "status", "reason", "satisfied_at", "next_check_at"),
    [
        (T0, Status.PENDING, "RolloutPosition", None, T0 + timedelta(seconds=240)),
        (T0 + timedelta(seconds=239), Status.PENDING, "RolloutPosition", None, T0 + timedelta(seconds=240)),
        (T0 + timedelta(seconds=240), Status.ALLOWED, "RolloutReached", T0 + timedelta(seconds=240), None),
        (T0 + timedelta(days=3), Status.ALLOWED, "RolloutReached", T0 + timedelta(seconds=240), None),
    ],
)
def test_last_target_waits_for_its_slot(
    now: datetime, status: Status, reason: str, satisfied_at: datetime | None, next_check_at: datetime | None
) -> None:
    verdict = evaluate(
        LINEAR,
        target_id="target-c",
        version_id="v1",
        environment_target_ids=TARGETS,
        start_at=T0,
        already_on_version=False,
        now=now,
    )
    assert (verdict.status, verdict.reason) == (status, reason)
    assert (verdict.satisfied_at, verdict.next_check_at) == (satisfied_at, next_check_at)
    assert verdict.details == {
        "position": 2,
        "total": 3,
        "offsetSeconds": 240,
        "rolloutAt": "2026-03-02T14:04:00Z",
    }


def test_already_deployed_and_awaiting_gates() -> None:
    common = {"target_id": "target-b", "version_id": "v1", "environment_target_ids": TARGETS, "now": T0}
    deployed = evaluate(LINEAR, start_at=None, already_on_version=True, **common)  # type: ignore[arg-type]
    assert (deployed.status, deployed.reason) == (Status.ALLOWED, "AlreadyDeployed")
    waiting = evaluate(LINEAR, start_at=None, already_on_version=False, **common)  # type: ignore[arg-type]
    assert (waiting.status, waiting.reason, waiting.next_check_at) == (Status.PENDING, "AwaitingGates", None)


def test_zero_interval_rolls_out_everywhere_at_the_start() -> None:
    spec = GradualRolloutSpec(rollout_type="linear", time_scale_interval=0)
    assert {rollout_at(spec, t) for t in TARGETS} == {T0}


def test_an_unknown_target_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="not among"):
        rollout_at(LINEAR, "elsewhere")


@pytest.mark.parametrize(
    "fields",
    [
        {"rolloutType": "exponential", "timeScaleInterval": 60},
        {"rolloutType": "linear", "timeScaleInterval": -1},
        {"rolloutType": "linear"},
        {"rolloutType": "linear", "timeScaleInterval": 60, "extra": True},
    ],
)
def test_invalid_specs_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GradualRolloutSpec.model_validate(fields)


def test_camel_case_round_trip() -> None:
    spec = GradualRolloutSpec.model_validate({"rolloutType": "linear-normalized", "timeScaleInterval": 3600})
    assert spec.model_dump(by_alias=True) == {"rolloutType": "linear-normalized", "timeScaleInterval": 3600}


ids = st.lists(st.uuids().map(str), min_size=1, max_size=40, unique=True)


@given(target_ids=ids, version_id=st.uuids().map(str))
def test_positions_are_a_permutation(target_ids: list[str], version_id: str) -> None:
    positions = rollout_positions(target_ids, version_id)
    assert set(positions) == set(target_ids)
    assert sorted(positions.values()) == list(range(len(target_ids)))


@given(target_ids=ids, version_id=st.uuids().map(str), interval=st.integers(0, 7 * 24 * 3600))
def test_normalized_rollout_fits_in_one_interval(
    target_ids: list[str], version_id: str, interval: int
) -> None:
    spec = GradualRolloutSpec(rollout_type="linear-normalized", time_scale_interval=interval)
    times = [
        evaluate(
            spec,
            target_id=t,
            version_id=version_id,
            environment_target_ids=target_ids,
            start_at=T0,
            already_on_version=False,
            now=T0 + timedelta(days=30),
        ).satisfied_at
        for t in target_ids
    ]
    assert all(t is not None and T0 <= t <= T0 + timedelta(seconds=interval) for t in times)
