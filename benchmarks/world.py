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
