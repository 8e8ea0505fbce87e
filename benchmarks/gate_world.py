"""Gate callers and pull agents over one production environment, built over the REST API.

Why it exists: the agents benchmark and the concurrent-writers fault test drive the same shape of
world, ``gated`` (no job agent: its agents ask ``POST /v1/gate``) over VMs and ``pulled`` (a pull
agent's) over clusters, and should not each spell it out. Policies, versions and approvals differ
between them and stay with each.

Must not: decide anything about the load; every request must succeed or raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

Doc = dict[str, Any]


def ok(response: httpx.Response, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json()


@dataclass(frozen=True)
class GateWorld:
    gaters: Doc  # the job agent of the gate callers
    pullers: Doc  # the pull agent
    gate_token: str  # an agent token bound to ``gaters``
    pull_token: str  # an agent token bound to ``pullers``
    production: Doc
    gated: Doc  # the deployment on the VMs, without a job agent
    pulled: Doc  # the deployment on the clusters, with ``pullers``
    vms: list[str]  # resource identifiers, in order
    clusters: list[str]


def build(admin: httpx.Client, vms: int, clusters: int) -> GateWorld:
    gaters = ok(admin.post("/v1/job-agents", json={"name": "gaters"}), 201)
    pullers = ok(admin.post("/v1/job-agents", json={"name": "pullers"}), 201)
    gate_token = ok(admin.post("/v1/tokens", json={"name": "gater", "role": "agent", "jobAgentId": gaters["id"]}),
                    201)["token"]
    pull_token = ok(admin.post("/v1/tokens", json={"name": "puller", "role": "agent", "jobAgentId": pullers["id"]}),
                    201)["token"]
    system = ok(admin.post("/v1/systems", json={"name": "shop"}), 201)
    production = ok(admin.post("/v1/environments", json={
        "systemId": system["id"], "name": "production", "resourceSelector": "resource.metadata.tier == 'prod'"}), 201)
    gated = ok(admin.post("/v1/deployments", json={
        "systemId": system["id"], "name": "Gated", "slug": "gated", "resourceSelector": "resource.kind == 'vm'"}), 201)
    pulled = ok(admin.post("/v1/deployments", json={
        "systemId": system["id"], "name": "Pulled", "slug": "pulled", "resourceSelector": "resource.kind == 'k8s'",
        "jobAgentId": pullers["id"]}), 201)
    vm_ids, cluster_ids = [f"vm-{i:04d}" for i in range(vms)], [f"k8s-{i:04d}" for i in range(clusters)]
    ok(admin.put("/v1/resources", json=[
        *({"identifier": key, "name": key, "kind": "vm", "metadata": {"tier": "prod"}} for key in vm_ids),
        *({"identifier": key, "name": key, "kind": "k8s", "metadata": {"tier": "prod"}} for key in cluster_ids),
    ]))
    return GateWorld(gaters, pullers, gate_token, pull_token, production, gated, pulled, vm_ids, cluster_ids)
