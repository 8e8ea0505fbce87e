"""Release targets are kept exact through the API as inventory and selectors change."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient


def post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def triples(client: TestClient, **filters: str) -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7, **filters}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/release-targets", params=params).json()
        found |= {(t["resourceId"], t["environmentId"], t["deploymentId"]) for t in page["items"]}
        cursor = page["nextCursor"]
        if cursor is None:
            return found


def world(client: TestClient) -> dict[str, Any]:
    system = post(client, "/v1/systems", {"name": "payments"})
    other = post(client, "/v1/systems", {"name": "search"})
    resources = {
        name: post(client, "/v1/resources", {"identifier": name, "name": name, "kind": kind, "metadata": meta})
        for name, kind, meta in [
            ("use1-a", "k8s", {"region": "us-east-1", "tier": "prod"}),
            ("use1-b", "k8s", {"region": "us-east-1", "tier": "staging"}),
            ("euw1-a", "k8s", {"region": "eu-west-1", "tier": "prod"}),
            ("vm-1", "vm", {"region": "us-east-1"}),
        ]
    }
    prod = post(
        client,
        "/v1/environments",
        {"systemId": system["id"], "name": "production", "resourceSelector": "resource.metadata.tier == 'prod'"},
    )
    staging = post(
        client,
        "/v1/environments",
        {"systemId": system["id"], "name": "staging", "resourceSelector": "resource.metadata['tier'] == 'staging'"},
    )
    empty = post(client, "/v1/environments", {"systemId": system["id"], "name": "nothing"})
    api = post(
        client,
        "/v1/deployments",
        {"systemId": system["id"], "name": "API", "slug": "api", "resourceSelector": "resource.kind == 'k8s'"},
    )
    worker = post(client, "/v1/deployments", {"systemId": system["id"], "name": "Worker", "slug": "worker"})
    foreign = post(client, "/v1/deployments", {"systemId": other["id"], "name": "Indexer", "slug": "indexer"})
    return {
        "system": system,
        "r": {k: v["id"] for k, v in resources.items()},
        "prod": prod["id"],
        "staging": staging["id"],
        "empty": empty["id"],
        "api": api["id"],
        "worker": worker["id"],
        "foreign": foreign["id"],
    }


def test_targets_follow_selectors_and_systems(client: TestClient) -> None:
    w = world(client)
    r = w["r"]
    assert triples(client) == {
        (r["use1-a"], w["prod"], w["api"]),
        (r["use1-a"], w["prod"], w["worker"]),
        (r["euw1-a"], w["prod"], w["api"]),
        (r["euw1-a"], w["prod"], w["worker"]),
        (r["use1-b"], w["staging"], w["api"]),
        (r["use1-b"], w["staging"], w["worker"]),
    }
    # Missing metadata key (vm-1 has no tier) is "no match", not an error.
    assert triples(client, resourceId=r["vm-1"]) == set()
    assert triples(client, environmentId=w["empty"]) == set()
    assert triples(client, deploymentId=w["foreign"]) == set()


def test_environment_selector_change_adds_and_removes(client: TestClient) -> None:
    w = world(client)
    r = w["r"]
    selector = "resource.metadata.region == 'us-east-1'"
    response = client.patch(f"/v1/environments/{w['prod']}", json={"resourceSelector": selector})
    assert response.status_code == 200, response.text
    assert triples(client, environmentId=w["prod"]) == {
        (r["use1-a"], w["prod"], w["api"]),
        (r["use1-a"], w["prod"], w["worker"]),
        (r["use1-b"], w["prod"], w["api"]),
        (r["use1-b"], w["prod"], w["worker"]),
        (r["vm-1"], w["prod"], w["worker"]),  # vm is not k8s: the api deployment skips it
    }
    assert client.patch(f"/v1/environments/{w['prod']}", json={"resourceSelector": None}).status_code == 200
    assert triples(client, environmentId=w["prod"]) == set()


def test_deployment_selector_and_resource_changes(client: TestClient) -> None:
    w = world(client)
    r = w["r"]
    client.patch(f"/v1/deployments/{w['api']}", json={"resourceSelector": "resource.metadata.region.startsWith('eu-')"})
    assert {t[0] for t in triples(client, deploymentId=w["api"])} == {r["euw1-a"]}
    # A resource moving tier moves its targets.
    client.patch(f"/v1/resources/{r['use1-b']}", json={"metadata": {"region": "us-east-1", "tier": "prod"}})
    assert {(t[0], t[1]) for t in triples(client, deploymentId=w["worker"])} == {
        (r["use1-a"], w["prod"]),
        (r["use1-b"], w["prod"]),
        (r["euw1-a"], w["prod"]),
    }
    # Deleting a resource removes its targets.
    assert client.delete("/v1/resources/use1-a").status_code == 204
    assert triples(client, resourceId=r["use1-a"]) == set()
    assert client.get(f"/v1/resources/{r['use1-a']}").status_code == 404


def test_deleting_environment_or_deployment_removes_targets(client: TestClient) -> None:
    w = world(client)
    assert client.delete(f"/v1/environments/{w['staging']}").status_code == 204
    assert triples(client, environmentId=w["staging"]) == set()
    assert client.delete(f"/v1/deployments/{w['worker']}").status_code == 204
    assert {t[2] for t in triples(client)} == {w["api"]}


def test_bulk_upsert_creates_updates_and_skips_unchanged(client: TestClient) -> None:
    w = world(client)
    items = [
        {"identifier": f"bulk-{i}", "name": f"bulk {i}", "kind": "k8s",
         "metadata": {"tier": "prod" if i % 2 else "staging"}}
        for i in range(300)
    ]
    first = client.put("/v1/resources", json=items)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["created"], body["updated"], body["unchanged"]) == (300, 0, 0)
    assert body["targetsAdded"] == 600  # each matches one environment, two deployments
    items[0]["metadata"] = {"tier": "prod"}  # staging -> prod
    second = client.put("/v1/resources", json=items).json()
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 1, 299)
    assert (second["targetsAdded"], second["targetsRemoved"]) == (2, 2)
    bulk0 = second["items"][0]["id"]
    assert {t[1] for t in triples(client, resourceId=bulk0)} == {w["prod"]}
