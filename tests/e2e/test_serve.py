"""Acceptance: the shipped ``releasegate serve`` keeps release targets exact, over real HTTP.

The expected targets are computed here from the same data with plain Python predicates, written to
mean what the CEL selectors mean (a missing metadata key does not match), and compared exactly.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import CLEAN_EXIT_CODES, ServerProcess, StartServer, start_server

Triple = tuple[str, str, str]  # (resource id, environment id, deployment id)
Doc = dict[str, Any]
Predicate = Callable[[Doc], bool]

KINDS = ("k8s", "ecs", "vm", "lambda")
TIERS = ("prod", "staging", "dev", None)  # None: no tier key at all
REGIONS = ("us-east-1", "eu-west-1", "us-west-2", None, "ap-south-1")


@dataclass(frozen=True)
class Selector:
    cel: str | None
    matches: Predicate


def tier(resource: Doc) -> str | None:
    value: str | None = resource["metadata"].get("tier")
    return value


PROD = Selector("resource.metadata.tier == 'prod'", lambda r: tier(r) == "prod")
STAGING_K8S = Selector(
    "resource.metadata['tier'] == 'staging' && resource.kind == 'k8s'",
    lambda r: tier(r) == "staging" and r["kind"] == "k8s",
)
STAGING_ECS = Selector(
    "resource.metadata['tier'] == 'staging' && resource.kind == 'ecs'",
    lambda r: tier(r) == "staging" and r["kind"] == "ecs",
)
NOTHING = Selector(None, lambda r: False)  # an environment without a selector matches no resource
# Excludes vm and lambda, eu-west-1, and (a missing key does not match) resources with no region.
CONTAINERS_OUTSIDE_EU = Selector(
    "resource.kind in ['k8s', 'ecs'] && resource.metadata.region != 'eu-west-1'",
    lambda r: r["kind"] in ("k8s", "ecs") and r["metadata"].get("region", "eu-west-1") != "eu-west-1",
)


def resource_body(i: int) -> Doc:
    metadata = {"team": f"team-{i % 3}"}
    if (t := TIERS[i % 4]) is not None:
        metadata["tier"] = t
    if (region := REGIONS[(i // 2) % 5]) is not None:
        metadata["region"] = region
    return {
        "identifier": f"res-{i:02d}",
        "name": f"Resource {i}",
        "kind": KINDS[(i // 3) % 4],
        "version": "v1",
        "metadata": metadata,
        "config": {"index": i},
    }


def expected(
    resources: list[Doc], environments: dict[str, Selector], deployments: dict[str, Selector]
) -> set[Triple]:
    return {
        (r["id"], env_id, dep_id)
        for r in resources
        for env_id, env in environments.items()
        for dep_id, dep in deployments.items()
        if env.matches(r) and dep.matches(r)
    }


def created(response: httpx.Response) -> Doc:
    assert response.status_code == 201, response.text
    body: Doc = response.json()
    return body


def targets(client: httpx.Client, **filters: str) -> set[Triple]:
    """Every page, with a small page size, checking that pages neither repeat nor skip."""
    listed: list[Triple] = []
    params: dict[str, str | int] = {"limit": 7, **filters}
    while True:
        response = client.get("/v1/release-targets", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 7
        listed += [(t["resourceId"], t["environmentId"], t["deploymentId"]) for t in page["items"]]
        if page["nextCursor"] is None:
            break
        params["cursor"] = page["nextCursor"]
    assert len(listed) == len(set(listed)), "a target was listed twice"
    return set(listed)


@dataclass
class World:
    system: Doc
    resources: list[Doc]
    environments: dict[str, Selector]
    deployments: dict[str, Selector]
    names: dict[str, str]  # environment or deployment name -> id

    def expected(self) -> set[Triple]:
        return expected(self.resources, self.environments, self.deployments)


def build_world(client: httpx.Client) -> World:
    """Some resources exist before the selectors, the rest arrive after them in one bulk PUT."""
    system = created(client.post("/v1/systems", json={"name": "payments", "description": "e2e"}))
    resources = [created(client.post("/v1/resources", json=resource_body(i))) for i in range(20)]
    environments: dict[str, Selector] = {}
    names: dict[str, str] = {}
    for name, selector in (("production", PROD), ("staging", STAGING_K8S), ("sandbox", NOTHING)):
        body = {"systemId": system["id"], "name": name, "resourceSelector": selector.cel}
        names[name] = created(client.post("/v1/environments", json=body))["id"]
        environments[names[name]] = selector
    body = {
        "systemId": system["id"],
        "name": "API",
        "slug": "api",
        "resourceSelector": CONTAINERS_OUTSIDE_EU.cel,
    }
    names["api"] = created(client.post("/v1/deployments", json=body))["id"]
    deployments = {names["api"]: CONTAINERS_OUTSIDE_EU}

    before = expected(resources, environments, deployments)
    bulk = client.put("/v1/resources", json=[resource_body(i) for i in range(20, 50)])
    assert bulk.status_code == 200, bulk.text
    summary = bulk.json()
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (30, 0, 0)
    resources += summary["items"]
    assert summary["targetsAdded"] == len(expected(resources, environments, deployments) - before)
    assert summary["targetsRemoved"] == 0
    return World(system, resources, environments, deployments, names)


def check_operational_endpoints(server: ServerProcess) -> None:
    """Probes and docs are public; everything under /v1 needs a valid token."""
    with server.new_client() as anonymous:
        for path in ("/healthz", "/readyz", "/docs", "/openapi.json", "/metrics"):
            assert anonymous.get(path).status_code == 200, path
        assert anonymous.get("/readyz").json()["status"] == "ok"
        assert "/v1/release-targets" in anonymous.get("/openapi.json").json()["paths"]
        denied = anonymous.get("/v1/systems")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
    with server.new_client("rg_not-a-real-token") as stranger:
        assert stranger.get("/v1/release-targets").status_code == 401
    assert server.client.get("/v1/release-targets", params={"limit": 1001}).status_code == 422
    assert server.client.get("/v1/release-targets", params={"limit": 1000}).status_code == 200


def test_release_targets_follow_inventory_over_http(server: ServerProcess) -> None:
    check_operational_endpoints(server)
    client = server.client
    world = build_world(client)
    assert len(world.resources) == 50 and len({r["id"] for r in world.resources}) == 50
    want = world.expected()
    # The data must exercise every selector branch, or the equality below proves little.
    assert {env for _, env, _ in want} == {world.names["production"], world.names["staging"]}
    assert 0 < len({r for r, _, _ in want}) < 50
    assert targets(client) == want

    # Filters select exactly the matching subset.
    prod, staging = world.names["production"], world.names["staging"]
    assert targets(client, environmentId=prod) == {t for t in want if t[1] == prod}
    assert targets(client, deploymentId=world.names["api"]) == want
    some = next(iter(want))[0]
    assert targets(client, resourceId=some) == {t for t in want if t[0] == some}

    # A selector change: staging k8s targets disappear, staging ecs targets appear.
    response = client.patch(f"/v1/environments/{staging}", json={"resourceSelector": STAGING_ECS.cel})
    assert response.status_code == 200, response.text
    assert response.json()["resourceSelector"] == STAGING_ECS.cel
    world.environments[staging] = STAGING_ECS
    after = world.expected()
    assert want - after and after - want, "the change should both add and remove targets"
    assert targets(client) == after

    # Clearing a selector: the environment matches nothing.
    response = client.patch(f"/v1/environments/{prod}", json={"resourceSelector": None})
    assert response.status_code == 200, response.text
    world.environments[prod] = NOTHING
    after = world.expected()
    assert after and not any(t[1] == prod for t in after)
    assert targets(client) == after

    # Deleting a resource takes its targets with it.
    victim = next(r for r in world.resources if any(t[0] == r["id"] for t in after))
    assert client.delete(f"/v1/resources/{victim['id']}").status_code == 204
    assert client.get(f"/v1/resources/{victim['id']}").status_code == 404
    world.resources.remove(victim)
    assert targets(client, resourceId=victim["id"]) == set()
    assert targets(client) == world.expected()


GENERATED = re.compile(r"generated admin token \(shown once\): (\S+)")


def test_generated_admin_token_is_printed_once_and_works(start: StartServer, tmp_path: Path) -> None:
    first = start(admin_token=None, name="fresh")
    tokens = GENERATED.findall(first.log())
    assert len(tokens) == 1, first.log()
    assert first.client.get("/v1/systems").status_code == 401  # no token configured, none sent
    first.use_token(tokens[0])
    created(first.client.post("/v1/systems", json={"name": "bootstrapped"}))
    assert first.stop() in CLEAN_EXIT_CODES

    # Restarted on the same database: an admin exists, so nothing new is generated or printed.
    second = start(admin_token=None, name="restarted")
    assert GENERATED.findall(second.log()) == [], second.log()
    second.use_token(tokens[0])
    names = [s["name"] for s in second.client.get("/v1/systems").json()["items"]]
    assert names == ["bootstrapped"]


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        created(server.client.post("/v1/systems", json={"name": "before-shutdown"}))
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=5)
        took = time.monotonic() - began
    finally:
        server.stop()
    log = server.log()
    assert took < 5
    assert "Application shutdown complete" in log and "Traceback" not in log, log
    with httpx.Client(timeout=1.0) as probe:
        try:
            probe.get(f"{server.base_url}/healthz")
        except httpx.TransportError:
            pass
        else:
            raise AssertionError("the port still answers after the server exited")
    assert code == 0, log
