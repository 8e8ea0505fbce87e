"""The single dispatch point from a rule's JSON key to its spec and its place in a decision.

``single``: only the highest-priority matched policy's rule applies (SPEC §3).
``version_level``: its ``satisfiedAt`` starts a gradual rollout (SPEC §4).
``job_gate``: checked when a job is about to be created, not when choosing the desired version.
``effect``: not a gate at all; it acts after a deploy (``verification`` measures a successful job).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from controller.rules.any_approval import AnyApprovalSpec
from controller.rules.condition import ConditionSpec
from controller.rules.deployment_dependency import DeploymentDependencySpec
from controller.rules.deployment_window import DeploymentWindowSpec
from controller.rules.environment_progression import EnvironmentProgressionSpec
from controller.rules.gradual_rollout import GradualRolloutSpec
from controller.rules.retry import RetrySpec
from controller.rules.verification import VerificationSpec
from controller.rules.version_cooldown import VersionCooldownSpec
from controller.rules.version_selector import VersionSelectorSpec


@dataclass(frozen=True)
class RuleType:
    key: str
    spec: type[BaseModel]
    single: bool = False
    version_level: bool = False
    job_gate: bool = False
    effect: bool = False


RULE_TYPES: dict[str, RuleType] = {
    t.key: t
    for t in (
        RuleType("anyApproval", AnyApprovalSpec, version_level=True),
        RuleType("environmentProgression", EnvironmentProgressionSpec, version_level=True),
        RuleType("gradualRollout", GradualRolloutSpec, single=True),
        RuleType("deploymentWindow", DeploymentWindowSpec),
        RuleType("versionCooldown", VersionCooldownSpec),
        RuleType("retry", RetrySpec, single=True, job_gate=True),
        RuleType("versionSelector", VersionSelectorSpec),
        RuleType("deploymentDependency", DeploymentDependencySpec),
        RuleType("condition", ConditionSpec),
        RuleType("verification", VerificationSpec, effect=True),
    )
}
