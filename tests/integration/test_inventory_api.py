"""Inventory CRUD over the API: fields, defaults, uniqueness, lookup by name, paging, filters, audit."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import T0


def created(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def test_system_crud_and_name_lookup(client: TestClient) -> None:
    system = created(client, "/v1/systems", {"name": "payments", "metadata": {"team": "pay"}})
    assert system["description"] == "" and system["metadata"] == {"team": "pay"}
    assert system["createdAt"] == system["updatedAt"] == T0.isoformat().replace("+00:00", "Z")
    assert client.get("/v1/systems/payments").json()["id"] == system["id"]
    patched = client.patch(f"/v1/systems/{system['id']}", json={"description": "money"}).json()
    assert patched["description"] == "money" and patched["name"] == "payments"
    duplicate = client.post("/v1/systems", json={"name": "payments"})
    assert duplicate.status_code == 409
    assert duplicate.json()["detail"][0]["loc"] == ["body", "name"]
    assert client.delete("/v1/systems/payments").status_code == 204
    assert client.get("/v1/systems/payments").status_code == 404


def test_system_with_children_cannot_be_deleted(client: TestClient) -> None:
    system = created(client, "/v1/systems", {"name": "s"})
    created(client, "/v1/environments", {"systemId": system["id"], "name": "prod"})
    response = client.delete(f"/v1/systems/{system['id']}")
    assert response.status_code == 409
    assert client.get(f"/v1/systems/{system['id']}").status_code == 200


def test_environment_and_deployment_uniqueness_is_per_system(client: TestClient) -> None:
    a = created(client, "/v1/systems", {"name": "a"})
    b = created(client, "/v1/systems", {"name": "b"})
    created(client, "/v1/environments", {"systemId": a["id"], "name": "prod"})
    created(client, "/v1/environments", {"systemId": b["id"], "name": "prod"})
    assert client.post("/v1/environments", json={"systemId": a["id"], "name": "prod"}).status_code == 409
    created(client, "/v1/deployments", {"systemId": a["id"], "name": "API", "slug": "api"})
    created(client, "/v1/deployments", {"systemId": b["id"], "name": "API", "slug": "api"})
    conflict = client.post("/v1/deployments", json={"systemId": a["id"], "name": "Other", "slug": "api"})
    assert conflict.status_code == 409 and conflict.json()["detail"][0]["loc"] == ["body", "slug"]
    listed = client.get("/v1/environments", params={"systemId": a["id"]}).json()["items"]
    assert [e["name"] for e in listed] == ["prod"]


def test_versions_and_job_agents(client: TestClient) -> None:
    system = created(client, "/v1/systems", {"name": "s"})
    agent = created(client, "/v1/job-agents", {"name": "runner", "config": {"queue": "q1"}})
    assert agent["type"] == "pull"
    dep = created(
        client,
        "/v1/deployments",
        {"systemId": system["id"], "name": "API", "slug": "api", "jobAgentId": agent["id"], "jobAgentConfig": {"a": 1}},
    )
    version = created(client, f"/v1/deployments/{dep['id']}/versions",
                      {"tag": "1.2.0", "config": {"image": "api:1.2.0"}})
    assert version["status"] == "ready" and version["name"] == "1.2.0" and version["createdBy"] == "admin"
    supplied = created(
        client,
        f"/v1/deployments/{dep['id']}/versions",
        {"tag": "1.1.0", "createdAt": "2026-01-01T00:00:00Z", "createdBy": "ci", "status": "building"},
    )
    assert supplied["createdAt"] == "2026-01-01T00:00:00Z" and supplied["createdBy"] == "ci"
    assert client.post(f"/v1/deployments/{dep['id']}/versions", json={"tag": "1.2.0"}).status_code == 409
    patched = client.patch(f"/v1/versions/{supplied['id']}", json={"status": "ready", "message": "built"}).json()
    assert (patched["status"], patched["message"]) == ("ready", "built")
    tags = [v["tag"] for v in client.get(f"/v1/deployments/{dep['id']}/versions").json()["items"]]
    assert tags == ["1.2.0", "1.1.0"]
    # Deleting the agent detaches it from deployments.
    assert client.delete("/v1/job-agents/runner").status_code == 204
    assert client.get(f"/v1/deployments/{dep['id']}").json()["jobAgentId"] is None


def test_resource_paging_and_filters(client: TestClient) -> None:
    for i in range(25):
        created(
            client,
            "/v1/resources",
            {"identifier": f"r{i:02}", "name": f"r{i}", "kind": "vm" if i % 5 == 0 else "k8s",
             "metadata": {"zone": f"z{i % 3}"}},
        )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/resources", params=params).json()
        seen += [r["identifier"] for r in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == [f"r{i:02}" for i in range(25)]
    assert len(client.get("/v1/resources", params={"kind": "vm"}).json()["items"]) == 5
    zone = client.get("/v1/resources", params={"metadata": ["zone:z1"], "kind": "k8s"}).json()["items"]
    assert {r["identifier"] for r in zone} == {f"r{i:02}" for i in range(25) if i % 3 == 1 and i % 5}
    assert client.get("/v1/resources", params={"identifier": "r07"}).json()["items"][0]["name"] == "r7"


def test_every_write_is_audited_with_before_and_after(client: TestClient) -> None:
    system = created(client, "/v1/systems", {"name": "s"})
    client.patch(f"/v1/systems/{system['id']}", json={"description": "d"})
    client.delete(f"/v1/systems/{system['id']}")
    entries = client.get("/v1/audit", params={"entityId": system["id"]}).json()["items"]
    assert [e["action"] for e in entries] == ["create", "update", "delete"]
    assert entries[0]["before"] is None and entries[0]["after"]["name"] == "s"
    assert entries[1]["before"]["description"] == "" and entries[1]["after"]["description"] == "d"
    assert entries[2]["after"] is None
    assert {e["actor"] for e in entries} == {"admin"} and entries[0]["at"].startswith("2026-03-02T14:00:00")


def test_unchanged_patch_is_not_audited(client: TestClient) -> None:
    system = created(client, "/v1/systems", {"name": "s", "description": "d"})
    client.patch(f"/v1/systems/{system['id']}", json={"description": "d"})
    assert len(client.get("/v1/audit", params={"entityId": system["id"]}).json()["items"]) == 1
