"""The reconcile step: from a decision to the actions that make the world match it (SPEC §5–§6).

Pure and level-based, controller-runtime style: it reads the snapshot (fresh state), not the event
that woke it, and returns actions plus the instant it wants to be called again. The shell applies
the actions in one transaction per batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.decision import Decision, Outcome, decide
from controller.engine import Engine
from controller.policy import merge
from controller.rules.verdict import Status
from controller.snapshot import Snapshot


@dataclass(frozen=True)
class CreateJob:
    target_id: str
    version_id: str
    attempt: int
    job_agent_id: str
    config: Mapping[str, Any]
    reason: str  # policy | redeploy | rollback


@dataclass(frozen=True)
class StartVerification:
    """Verify the target's current job under one verification rule (SPEC §7)."""

    job_id: str
    target_id: str
    policy_id: str
    policy_revision: int
    rule_id: str
    spec: Mapping[str, Any]  # the rule's JSON, as the run keeps it


Action = CreateJob | StartVerification


@dataclass(frozen=True)
class Reconciled:
    decision: Decision
    actions: tuple[Action, ...] = field(default=())
    # What the decision log compares: outcome, desired version and blocking reasons.
    log_key: str = ""
    fulfils_request: bool = False

    @property
    def next_evaluation_at(self) -> datetime | None:
        return self.decision.next_evaluation_at


def reconcile(snapshot: Snapshot, target_id: str, now: datetime, engine: Engine | None = None) -> Reconciled:
    engine = engine if engine is not None and engine.now == now else Engine(snapshot, now)
    decision = decide(snapshot, target_id, now, engine=engine, explain=False)
    key = log_key(decision)
    verify = _verifications(engine, decision)
    if decision.outcome is not Outcome.GO or decision.desired is None:
        return Reconciled(decision, verify, log_key=key)
    target = snapshot.targets[target_id]
    deployment = snapshot.deployments[target.deployment_id].data
    agent_id = deployment.get("jobAgentId")
    if agent_id is None:
        return Reconciled(decision, verify, log_key=key + "|NoJobAgent")
    version = decision.desired
    attempt = 1 + max((j.attempt for j in snapshot.jobs.get(target_id, ()) if j.version_id == version.id), default=0)
    config = merged_config(
        snapshot.job_agents.get(agent_id, {}),
        deployment.get("jobAgentConfig") or {},
        version.doc.get("config") or {},
    )
    if target_id not in snapshot.requests:
        reason = "policy"
    else:  # an operator's (or a failed verification's) request: the same version again, or an earlier one
        reason = "redeploy" if decision.current is not None and decision.current.id == version.id else "rollback"
    job = CreateJob(target_id, version.id, attempt, agent_id, config, reason)
    return Reconciled(decision, (*verify, job), key, fulfils_request=reason != "policy")


def _verifications(engine: Engine, decision: Decision) -> tuple[StartVerification, ...]:
    """A run per matched verification rule for the current job, once it succeeded and has none yet.
    Level-based: a job that succeeded while no controller ran is verified when one next looks."""
    job = engine.snapshot.current_job(decision.target_id)
    if job is None or job.verification is not None:
        return ()
    policies = decision.policies
    merged = engine.fact(("merged", *(p.id for p in policies)), lambda: merge(policies))
    return tuple(
        StartVerification(job.id, decision.target_id, a.policy.id, a.policy.revision, a.rule.id,
                          a.rule.spec.model_dump(mode="json", by_alias=True))
        for a in merged.effects
        if a.rule.type == "verification"
    )


def merged_config(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Agent, then deployment, then version: later layers win, nested objects merge."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = merged_config(merged[key], value)
            else:
                merged[key] = value
    return merged


def log_key(decision: Decision) -> str:
    """Per candidate examined, its blocking reasons: a change on the version the target waits for counts,
    not only one on the newest (which may be denied for good while an older one progresses)."""
    per_candidate = [
        c.version.id + "=" + ",".join(sorted(
            rv.verdict.reason for rv in c.verdicts if rv.blocking and rv.verdict.status is not Status.ALLOWED
        ))
        for c in decision.candidates
    ]
    jobs = sorted(rv.verdict.reason for rv in decision.job_verdicts if rv.verdict.status is not Status.ALLOWED)
    desired = decision.desired.id if decision.desired else "-"
    return "|".join([decision.outcome.value, desired, decision.reason, *per_candidate, *jobs])
