"""The world the loop tests drive through the API: one system with ``staging`` (resources tiered
``staging``) and ``production`` (tiered ``prod``), deployments, and a pull job agent ``runner`` with
its own agent token. Time moves only by ``advance_to``; ``run()`` is one controller pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient

from controller.clock import FakeClock
from controller.store.reconciler import PassResult

AGENT_CONFIG = {"image": {"registry": "registry.internal"}, "namespace": "default"}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


def create(client: TestClient, path: str, body: Any) -> dict[str, Any]:
    result: dict[str, Any] = ok(client.post(path, json=body), 201)
    return result


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def as_token(client: TestClient, name: str, role: str, agent_id: str | None = None) -> TestClient:
    body = {"name": name, "role": role, **({"jobAgentId": agent_id} if agent_id else {})}
    secret = create(client, "/v1/tokens", body)["token"]
    return TestClient(client.app, headers={"Authorization": f"Bearer {secret}"})


@dataclass
class World:
    client: TestClient
    clock: FakeClock
    system: str
    env: dict[str, str]
    res: dict[str, str]
    dep: dict[str, str]
    agent: str
    runner: TestClient  # the agent's own token

    def run(self) -> PassResult:
        result = self.client.app.state.loop.run_once()  # type: ignore[attr-defined]
        assert isinstance(result, PassResult), "the pass failed; see the log"
        return result

    def advance_to(self, instant: datetime) -> None:
        self.clock.set(instant)

    def target(self, deployment: str, environment: str, resource: str) -> str:
        params = {"deploymentId": self.dep[deployment], "environmentId": self.env[environment],
                  "resourceId": self.res[resource]}
        items = ok(self.client.get("/v1/release-targets", params=params))["items"]
        assert len(items) == 1, items
        return str(items[0]["id"])

    def version(self, deployment: str, tag: str, **fields: Any) -> dict[str, Any]:
        return create(self.client, f"/v1/deployments/{self.dep[deployment]}/versions", {"tag": tag, **fields})

    def policy(self, name: str, selector: str, *rules: Mapping[str, Any]) -> dict[str, Any]:
        return create(self.client, "/v1/policies", {"name": name, "selector": selector, "rules": list(rules)})

    def jobs(self, target_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        params = {"limit": 1000, **({"status": status} if status else {})}
        items: list[dict[str, Any]] = ok(self.client.get(f"/v1/job-agents/{self.agent}/jobs", params=params))["items"]
        return [j for j in items if target_id is None or j["releaseTargetId"] == target_id]

    def decision(self, target_id: str) -> dict[str, Any]:
        result: dict[str, Any] = ok(self.client.get(f"/v1/release-targets/{target_id}/decision"))
        return result

    def finish(self, job_id: str, status: str = "successful") -> dict[str, Any]:
        """Claim (if still pending) and report, as the agent, at the current instant."""
        if ok(self.runner.get(f"/v1/jobs/{job_id}"))["status"] == "pending":
            ok(self.runner.post(f"/v1/jobs/{job_id}/claim"))
        result: dict[str, Any] = ok(self.runner.patch(f"/v1/jobs/{job_id}", json={"status": status}))
        return result


def build(
    client: TestClient, clock: FakeClock, resources: Mapping[str, str], deployments: Mapping[str, bool] | Iterable[str],
    *, config: Mapping[str, Any] | None = None,
) -> World:
    """``resources``: identifier -> tier; ``deployments``: slug -> whether it has the ``runner`` agent."""
    agent = create(client, "/v1/job-agents", {"name": "runner", "config": AGENT_CONFIG})["id"]
    system = create(client, "/v1/systems", {"name": "payments"})["id"]
    env = {
        name: create(client, "/v1/environments", {"systemId": system, "name": name,
                                                  "resourceSelector": f"resource.metadata.tier == '{tier}'"})["id"]
        for name, tier in (("staging", "staging"), ("production", "prod"))
    }
    res = {
        identifier: create(client, "/v1/resources", {"identifier": identifier, "name": identifier, "kind": "k8s",
                                                     "metadata": {"tier": tier}})["id"]
        for identifier, tier in resources.items()
    }
    wanted = deployments if isinstance(deployments, Mapping) else dict.fromkeys(deployments, True)
    dep = {
        slug: create(client, "/v1/deployments", {
            "systemId": system, "name": slug, "slug": slug, "jobAgentId": agent if with_agent else None,
            "jobAgentConfig": dict(config or {}),
        })["id"]
        for slug, with_agent in wanted.items()
    }
    runner = as_token(client, "runner", "agent", agent)
    return World(client, clock, system, env, res, dep, agent, runner)
