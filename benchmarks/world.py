"""A realistic, seeded inventory for benchmarks: cloud resources, environments and deployments.

15,000 resources across clouds, regions, tiers, teams and kinds; 5 systems with 4 environments each;
50 deployments. Selectors are varied the way operators write them: equality on metadata, prefixes,
`in` lists, `has()`, and a few that read the unique resource name (the worst case for caching).
"""

from __future__ import annotations

import random
from typing import Any

CLOUDS = {"aws": ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1"],
          "gcp": ["us-central1", "europe-west4", "asia-east1"],
          "azure": ["eastus", "westeurope", "northeurope", "southeastasia"]}
KINDS = ["kubernetes-cluster", "vm", "lambda", "database"]
TIERS = ["dev", "qa", "staging", "prod"]
TEAMS = [f"team-{i:02}" for i in range(20)]
SYSTEMS = ["payments", "search", "identity", "checkout", "analytics"]


def resources(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = []
    for i in range(count):
        cloud = rng.choice(list(CLOUDS))
        region = rng.choice(CLOUDS[cloud])
        kind = rng.choices(KINDS, weights=[5, 3, 1, 1])[0]
        tier = rng.choices(TIERS, weights=[3, 2, 2, 3])[0]
        metadata = {"cloud": cloud, "region": region, "tier": tier, "team": rng.choice(TEAMS)}
        if rng.random() < 0.3:
            metadata["pci"] = "true"
        if rng.random() < 0.1:
            metadata["canary"] = "true"
        prefix = {"kubernetes-cluster": "k8s", "vm": "vm", "lambda": "fn", "database": "db"}[kind]
        items.append({
            "identifier": f"{cloud}/{region}/{prefix}-{i:05}",
            "name": f"{prefix}-{region}-{i:05}",
            "kind": kind,
            "version": "v1",
            "metadata": metadata,
            "config": {"replicas": rng.randint(1, 9), "nodePool": f"pool-{rng.randint(1, 4)}"},
        })
    return items


ENVIRONMENT_SELECTORS = {
    "dev": "resource.metadata.tier == 'dev'",
    "qa": "resource.metadata['tier'] == 'qa' && resource.metadata.cloud != 'azure'",
    "staging": "resource.metadata.tier == 'staging' && resource.kind in ['kubernetes-cluster', 'vm']",
    "prod": "resource.metadata.tier == 'prod' && !has(resource.metadata.canary)",
}
SYSTEM_SCOPES = {
    "payments": " && has(resource.metadata.pci)",
    "search": " && resource.metadata.region.startsWith('us-')",
    "identity": "",
    "checkout": " && resource.metadata.cloud == 'aws'",
    "analytics": " && resource.name.startsWith('k8s-')",  # reads the unique name: no memo hits
}


def environments() -> list[dict[str, Any]]:
    return [
        {"system": system, "name": tier, "resourceSelector": ENVIRONMENT_SELECTORS[tier] + SYSTEM_SCOPES[system]}
        for system in SYSTEMS
        for tier in TIERS
    ]


DEPLOYMENT_SELECTORS = [
    None,
    "resource.kind == 'kubernetes-cluster'",
    "resource.kind in ['vm', 'kubernetes-cluster']",
    "resource.metadata.team in ['team-01', 'team-02', 'team-03', 'team-04', 'team-05']",
    "resource.kind == 'lambda' || resource.kind == 'vm'",
    "resource.metadata.region.startsWith('eu-') || resource.metadata.region.startsWith('europe')",
    "resource.kind == 'database'",
    "resource.config.replicas >= 3",
    "resource.metadata.team == 'team-07' || resource.kind == 'kubernetes-cluster'",
    "resource.identifier.contains('/k8s-')",  # unique field
]


def deployments() -> list[dict[str, Any]]:
    return [
        {"system": system, "name": f"{system}-svc-{j}", "slug": f"{system}-svc-{j}",
         "resourceSelector": DEPLOYMENT_SELECTORS[j]}
        for system in SYSTEMS
        for j in range(10)
    ]


# ---------------------------------------------------------------------------------------------
# One system, one deployment decided at scale (benchmarks/decide.py): 20 environments of
# (stage, region), resources spread evenly over them by metadata, an upstream deployment sharing
# the clusters, and ten policies mixing every rule type with selectors of each kind.

RELEASE_STAGES = ["dev", "qa", "staging", "prod"]
RELEASE_REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1"]


def release_environments() -> list[dict[str, Any]]:
    """20 environments, each selecting its resources by two metadata keys."""
    return [
        {"name": f"{stage}-{region}", "metadata": {"stage": stage, "region": region},
         "resourceSelector": f"resource.metadata.stage == '{stage}' && resource.metadata['region'] == '{region}'"}
        for stage in RELEASE_STAGES
        for region in RELEASE_REGIONS
    ]


def release_resources(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """``count`` resources, round-robin over the 20 environments (exactly count/20 in each)."""
    rng = random.Random(seed)
    envs = [(stage, region) for stage in RELEASE_STAGES for region in RELEASE_REGIONS]
    items = []
    for i in range(count):
        stage, region = envs[i % len(envs)]
        kind = rng.choices(["kubernetes-cluster", "vm"], weights=[7, 3])[0]
        metadata = {"stage": stage, "region": region, "team": rng.choice(TEAMS),
                    "tier": rng.choices(["gold", "silver", "bronze"], weights=[2, 5, 3])[0]}
        if rng.random() < 0.3:
            metadata["pci"] = "true"
        prefix = "k8s" if kind == "kubernetes-cluster" else "vm"
        items.append({
            "identifier": f"aws/{region}/{stage}/{prefix}-{i:05}",
            "name": f"{prefix}-{stage}-{region}-{i:05}",
            "kind": kind,
            "version": "v1",
            "metadata": metadata,
            "config": {"replicas": rng.randint(1, 9)},
        })
    return items


RELEASE_DEPLOYMENTS = [
    # The deployment being decided: no selector, so every resource of every environment.
    {"name": "checkout-api", "slug": "checkout-api", "metadata": {"tier": "critical", "team": "team-03"},
     "resourceSelector": None},
    # Upstream for deploymentDependency: shares the Kubernetes clusters.
    {"name": "mesh-agent", "slug": "mesh-agent", "metadata": {"tier": "platform", "team": "team-00"},
     "resourceSelector": "resource.kind == 'kubernetes-cluster'"},
]

RELEASE_POLICIES: list[dict[str, Any]] = [
    {"name": "prod-gates", "priority": 20,
     "selector": "environment.metadata.stage == 'prod'",  # environment only
     "rules": [
         {"anyApproval": {"minApprovals": 2}},
         {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.metadata.stage == 'staging'",
                                     "minimumSuccessPercentage": 80, "minimumSoakTimeMinutes": 30,
                                     "maximumAgeHours": 720}},
     ]},
    {"name": "staging-gates", "priority": 10,
     "selector": "environment.name.startsWith('staging-')",  # environment only
     "rules": [
         {"anyApproval": {"minApprovals": 1, "expiresAfterMinutes": 7 * 24 * 60}},
         {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.metadata.stage == 'qa'",
                                     "minimumSoakTimeMinutes": 15}},
     ]},
    {"name": "qa-after-dev", "priority": 5,
     "selector": "environment.metadata.stage == 'qa'",
     "rules": [
         {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.metadata.stage == 'dev'",
                                     "minimumSuccessPercentage": 50}},
     ]},
    {"name": "business-hours", "priority": 0,
     "selector": "deployment.metadata.tier == 'critical' && environment.metadata.stage in ['staging', 'prod']",
     "rules": [
         {"deploymentWindow": {"rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH;BYHOUR=9", "durationMinutes": 480,
                               "timezone": "America/New_York"}},
     ]},
    {"name": "weekend-freeze", "priority": 0,
     "selector": "true",
     "rules": [
         {"deploymentWindow": {"rrule": "FREQ=WEEKLY;BYDAY=FR;BYHOUR=18", "durationMinutes": 54 * 60,
                               "timezone": "UTC", "allowWindow": False}},
     ]},
    {"name": "prod-rollout", "priority": 20,
     "selector": "environment.metadata.stage == 'prod' && deployment.slug == 'checkout-api'",
     "rules": [{"gradualRollout": {"rolloutType": "linear-normalized", "timeScaleInterval": 7200}}]},
    {"name": "default-rollout", "priority": 0,
     "selector": "true",
     "rules": [
         {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": 30}},
         {"retry": {"maxRetries": 2, "backoffSeconds": 120, "backoffStrategy": "exponential"}},
     ]},
    {"name": "gold-cooldown", "priority": 0,
     "selector": "resource.metadata.tier == 'gold'",  # resource metadata
     "rules": [{"versionCooldown": {"intervalSeconds": 3600}}]},
    {"name": "release-trains", "priority": 0,
     "selector": "environment.metadata.stage in ['staging', 'prod']",
     "rules": [
         {"versionSelector": {"selector": "semver(version.tag).compare('2.0.0') >= 0 && !version.tag.contains('-')",
                              "description": "only 2.x releases, no pre-releases, beyond qa"}},
     ]},
    {"name": "pci-and-mesh", "priority": 0,
     "selector": "has(resource.metadata.pci) && resource.kind == 'kubernetes-cluster'",  # resource metadata
     "rules": [
         {"condition": {"expression": "environment.metadata.stage != 'prod' || "
                                      "(has(version.metadata.pciReviewed) && version.metadata.pciReviewed == 'true')",
                        "reason": "PciReviewPending"}},
         {"deploymentDependency": {"dependsOn": "deployment.slug == 'mesh-agent' && "
                                                "semver(version.tag).compare('1.4.0') >= 0"}},
     ]},
]
