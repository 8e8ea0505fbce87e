"""``gradualRollout``: spread one version's deploys over an environment's targets in time.

Why it exists: a bad version should reach one target first, not all of them at once. Targets are
put in a stable pseudo-random order per version (sha256 of target id and version id), and the
target at position p may deploy ``offset(p)`` after the rollout's start.

Must not: decide the start itself. The start (the latest ``satisfied_at`` of the version-level
gates, moved to the next window opening when an allow window applies) is computed by the engine
and passed in; this module only adds the offset. It must not read a clock, and the order must not
depend on anything but the ids (not on input order, process or hash seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from controller.rules.verdict import Verdict


class GradualRolloutSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    rollout_type: Literal["linear", "linear-normalized"] = "linear"
    time_scale_interval: int = Field(ge=0, le=366 * 24 * 3600, description="seconds")


def rollout_positions(target_ids: Sequence[str], version_id: str) -> dict[str, int]:
    """Each target's position, from 0, in this version's rollout order."""
    ordered = sorted(set(target_ids), key=lambda target_id: (_rank(target_id, version_id), target_id))
    return {target_id: position for position, target_id in enumerate(ordered)}


def offset(spec: GradualRolloutSpec, position: int, total: int) -> timedelta:
    """Delay after the start for the target at ``position`` of ``total``."""
    if spec.rollout_type == "linear":
        return timedelta(seconds=position * spec.time_scale_interval)
    return timedelta(seconds=position * spec.time_scale_interval // total)


def evaluate(
    spec: GradualRolloutSpec,
    *,
    target_id: str,
    version_id: str,
    environment_target_ids: Sequence[str],
    start_at: datetime | None,
    already_on_version: bool,
    now: datetime,
    positions: Mapping[str, int] | None = None,
) -> Verdict:
    """``positions`` may carry ``rollout_positions(environment_target_ids, version_id)`` computed
    once for the whole environment; otherwise it is computed here."""
    if already_on_version:
        return Verdict.allowed("AlreadyDeployed", "the target already runs this version")
    if start_at is None:
        return Verdict.pending("AwaitingGates", "the rollout starts when the version's gates are satisfied")
    if positions is None:
        positions = rollout_positions(environment_target_ids, version_id)
    if target_id not in positions:  # the engine passes the environment's targets, this one included
        raise ValueError(f"target {target_id!r} is not among the environment's targets")
    position, total = positions[target_id], len(positions)
    rollout_at = start_at + offset(spec, position, total)
    details = {
        "position": position,
        "total": total,
        "offsetSeconds": int((rollout_at - start_at).total_seconds()),
        "rolloutAt": rollout_at.isoformat().replace("+00:00", "Z"),
    }
    where = f"position {position + 1} of {total}"
    if now < rollout_at:
        message = f"{where}; rolls out at {details['rolloutAt']}"
        return Verdict.pending("RolloutPosition", message, details=details, next_check_at=rollout_at)
    return Verdict.allowed("RolloutReached", f"{where}; rolled out", details=details, satisfied_at=rollout_at)


def _rank(target_id: str, version_id: str) -> bytes:
    # Ids are UUIDs and never hold NUL, so ("ab", "c") and ("a", "bc") cannot collide.
    return hashlib.sha256(f"{target_id}\x00{version_id}".encode()).digest()
