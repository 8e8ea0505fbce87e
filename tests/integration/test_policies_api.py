"""Policies, approvals, overrides and the explain endpoint over the API, on each real backend.

Policies: CRUD, a revision per write (readable after delete), Ctrlplane files loading as written, and
every way a policy can be invalid: a 422 naming the field (with the expression, line and column for
CEL), and nothing stored. Approvals: who may approve, one record per (version, environment, user),
references checked, the pending list. Overrides: reason and expiry rules, revocation, audit. Explain:
``?version=`` by tag or id, ``?at=`` in the future, unknown ids.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.clock import FakeClock
from tests.conftest import T0

OFFICE_HOURS = {
    "rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH;BYHOUR=9", "durationMinutes": 480, "timezone": "America/New_York"
}
PROD_GATES = {
    "name": "prod-gates",
    "description": "two approvals, office hours",
    "selector": "environment.name == 'production'",
    "priority": 20,
    "metadata": {"owner": "sre"},
    "rules": [{"anyApproval": {"minApprovals": 2}}, {"deploymentWindow": OFFICE_HOURS}],
}


def post(client: TestClient, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def items(client: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["items"]
    return found


def bearer(client: TestClient, role: str, name: str | None = None) -> dict[str, str]:
    token = post(client, "/v1/tokens", {"name": name or f"{role}-1", "role": role})["token"]
    return {"Authorization": f"Bearer {token}"}


def stored(client: TestClient) -> tuple[Any, ...]:
    """Everything a rejected policy write could have touched."""
    policies = items(client, "/v1/policies")
    revisions = [items(client, f"/v1/policies/{p['id']}/revisions") for p in policies]
    return policies, revisions, items(client, "/v1/audit", entityType="policy")


# ------------------------------------------------------------------------------------- CRUD


def test_policy_crud_makes_a_revision_per_write(client: TestClient, clock: FakeClock) -> None:
    created = post(client, "/v1/policies", PROD_GATES)
    assert created["revision"] == 1 and created["enabled"] is True and created["priority"] == 20
    assert created["createdAt"] == created["updatedAt"] == "2026-03-02T14:00:00Z"
    assert [list(r) for r in created["rules"]] == [["id", "enforcement", "anyApproval"],
                                                   ["id", "enforcement", "deploymentWindow"]]
    assert {r["enforcement"] for r in created["rules"]} == {"block"}
    policy_id = created["id"]
    assert client.get(f"/v1/policies/{policy_id}").json() == created
    assert client.get("/v1/policies/prod-gates").json() == created
    assert [p["id"] for p in items(client, "/v1/policies")] == [policy_id]

    clock.advance(timedelta(minutes=1))
    replacement = {"name": "prod-gates", "rules": [{"retry": {"maxRetries": 2}}]}
    replaced = client.put("/v1/policies/prod-gates", json=replacement)
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    # PUT replaces the whole policy: every field not sent takes its default.
    assert (body["revision"], body["description"], body["priority"], body["selector"], body["metadata"]) == (
        2, "", 0, "true", {})
    assert [r["retry"]["maxRetries"] for r in body["rules"]] == [2]
    assert (body["createdAt"], body["updatedAt"]) == ("2026-03-02T14:00:00Z", "2026-03-02T14:01:00Z")

    fresh = client.put("/v1/policies/canary", json={"name": "canary", "selector": "environment.name == 'canary'"})
    assert fresh.status_code == 201 and fresh.json()["revision"] == 1
    assert client.put("/v1/policies/ghost", json={"name": "not-ghost"}).status_code == 404

    clock.advance(timedelta(minutes=1))
    patched = client.patch(f"/v1/policies/{policy_id}", json={"enabled": False, "priority": 7})
    assert patched.status_code == 200
    assert (patched.json()["revision"], patched.json()["enabled"], patched.json()["priority"]) == (3, False, 7)
    assert patched.json()["rules"] == body["rules"]  # PATCH keeps what it does not name
    unchanged = client.patch(f"/v1/policies/{policy_id}", json={"enabled": False})
    assert unchanged.json()["revision"] == 3  # nothing changed, no revision

    clock.advance(timedelta(minutes=1))
    assert client.delete("/v1/policies/prod-gates").status_code == 204
    assert client.get(f"/v1/policies/{policy_id}").status_code == 404
    assert client.delete(f"/v1/policies/{policy_id}").status_code == 404
    assert [p["name"] for p in items(client, "/v1/policies")] == ["canary"]

    revisions = items(client, f"/v1/policies/{policy_id}/revisions")
    assert [(r["revision"], r["action"]) for r in revisions] == [
        (1, "create"), (2, "update"), (3, "update"), (4, "delete")]
    assert {r["policyId"] for r in revisions} == {policy_id}
    assert revisions[0]["document"]["description"] == "two approvals, office hours"
    assert revisions[0]["document"]["rules"] == created["rules"]
    assert revisions[1]["document"]["rules"] == body["rules"]
    assert revisions[2]["document"]["enabled"] is False
    assert [r["createdAt"] for r in revisions] == [
        "2026-03-02T14:00:00Z", "2026-03-02T14:01:00Z", "2026-03-02T14:02:00Z", "2026-03-02T14:03:00Z"]
    assert {r["createdBy"] for r in revisions} == {"admin"}
    assert client.get("/v1/policies/no-such-policy/revisions").status_code == 404

    audit = items(client, "/v1/audit", entityId=policy_id)
    assert [a["action"] for a in audit] == ["create", "update", "update", "delete"]
    assert audit[1]["before"]["priority"] == 20 and audit[1]["after"]["priority"] == 0


def test_an_operator_may_write_policies_and_a_viewer_or_approver_may_not(client: TestClient) -> None:
    operator, viewer, approver = bearer(client, "operator"), bearer(client, "viewer"), bearer(client, "approver")
    assert client.post("/v1/policies", json=PROD_GATES, headers=operator).status_code == 201
    for headers in (viewer, approver):
        assert client.post("/v1/policies", json={"name": "x"}, headers=headers).status_code == 403
        assert client.patch("/v1/policies/prod-gates", json={"priority": 1}, headers=headers).status_code == 403
        assert client.delete("/v1/policies/prod-gates", headers=headers).status_code == 403
        assert client.get("/v1/policies/prod-gates", headers=headers).status_code == 200
    assert client.get("/v1/policies/prod-gates").json()["revision"] == 1


def test_a_ctrlplane_policy_loads_as_written(client: TestClient) -> None:
    policy_id = "2f0c7a52-1d2e-4c3b-9a8f-5e6d7c8b9a01"
    exported = {
        "id": policy_id,
        "workspaceId": "0d9b1a4e-aaaa-4bbb-8ccc-dddddddddddd",
        "createdAt": "2025-06-01T12:00:00.000Z",
        "name": "prod-rollout",
        "description": "copied from Ctrlplane",
        "selector": "environment.name == 'production'",
        "priority": 10,
        "enabled": True,
        "metadata": {},
        "rules": [
            {
                "id": "rule-progression",
                "policyId": policy_id,
                "createdAt": "2025-06-01T12:00:00.000Z",
                "environmentProgression": {
                    "dependsOnEnvironmentSelector": "environment.name == 'staging'",
                    "minimumSockTimeMinutes": 30,
                    "minimumSuccessPercentage": 100,
                },
            },
            {
                "id": "rule-rollout",
                "policyId": policy_id,
                "createdAt": "2025-06-01T12:00:00.000Z",
                "gradualRollout": {"rolloutType": "linear-normalized", "timeScaleInterval": 3600},
            },
        ],
    }
    created = post(client, "/v1/policies", exported)
    assert created["id"] != policy_id  # ids are the server's
    assert created["createdAt"] == "2026-03-02T14:00:00Z"
    assert (created["name"], created["priority"], created["description"]) == (
        "prod-rollout", 10, "copied from Ctrlplane")
    progression, rollout = created["rules"]
    assert (progression["id"], rollout["id"]) == ("rule-progression", "rule-rollout")
    assert "policyId" not in progression and "createdAt" not in progression
    assert progression["environmentProgression"]["minimumSoakTimeMinutes"] == 30
    assert rollout["gradualRollout"] == {"rolloutType": "linear-normalized", "timeScaleInterval": 3600}
    # The stored canonical form is itself accepted again, unchanged (a round trip is not a new revision).
    again = client.put(f"/v1/policies/{created['id']}", json={k: created[k] for k in (
        "name", "description", "selector", "priority", "enabled", "metadata", "rules")})
    assert again.status_code == 200 and again.json()["revision"] == 1


# ------------------------------------------------------------------------------------- every 422


def cel(loc: list[Any], expression: str, line: int, column: int) -> dict[str, Any]:
    return {"loc": loc, "type": "cel_syntax", "expression": expression, "line": line, "column": column}


def window(**fields: Any) -> list[dict[str, Any]]:
    return [{"deploymentWindow": {**OFFICE_HOURS, **fields}}]


RULE_0, RULE_1 = ["body", "rules", 0], ["body", "rules", 1]
APPROVAL = {"anyApproval": {"minApprovals": 1}}

INVALID: list[Any] = [
    pytest.param({"selector": "environment.name =="}, cel(["body", "selector"], "environment.name ==", 1, 18),
                 id="selector-syntax"),
    pytest.param({"selector": "environment.name == 'a' &&\n  resource.kind =="},
                 cel(["body", "selector"], "environment.name == 'a' &&\n  resource.kind ==", 2, 17),
                 id="selector-syntax-line-2"),
    pytest.param({"selector": "version.tag == '1.0.0'"}, cel(["body", "selector"], "version.tag == '1.0.0'", 1, 1),
                 id="selector-undeclared-variable"),
    pytest.param({"rules": [{"approveAll": {}}]}, {"loc": [*RULE_0, "approveAll"], "type": "unknown_rule_type"},
                 id="unknown-rule-type"),
    pytest.param({"rules": [{"anyApproval": {}, "retry": {}}]}, {"loc": RULE_0}, id="two-rule-keys"),
    pytest.param({"rules": [{"id": "lonely"}]}, {"loc": RULE_0}, id="no-rule-key"),
    pytest.param({"rules": ["anyApproval"]}, {"loc": RULE_0}, id="rule-is-a-string"),
    pytest.param({"rules": [[APPROVAL]]}, {"loc": RULE_0}, id="rule-is-a-list"),
    pytest.param({"rules": [{"anyApproval": 2}]}, {"loc": [*RULE_0, "anyApproval"]}, id="rule-body-not-an-object"),
    pytest.param({"rules": [{**APPROVAL, "enforcement": "audit"}]}, {"loc": [*RULE_0, "enforcement"]},
                 id="bad-enforcement"),
    pytest.param({"rules": [{"anyApproval": {"minApproval": 2}}]}, {"loc": [*RULE_0, "anyApproval", "minApproval"]},
                 id="unknown-rule-field"),
    pytest.param({"rules": window(rrule="FREQ=SOMETIMES")}, {"loc": [*RULE_0, "deploymentWindow", "rrule"]},
                 id="invalid-rrule"),
    pytest.param({"rules": window(rrule="FREQ=DAILY;BYHOUR=25")}, {"loc": [*RULE_0, "deploymentWindow", "rrule"]},
                 id="rrule-out-of-range"),
    pytest.param({"rules": window(timezone="Mars/Olympus_Mons")}, {"loc": [*RULE_0, "deploymentWindow", "timezone"]},
                 id="unknown-timezone"),
    pytest.param({"rules": window(rrule="FREQ=DAILY;BYHOUR=9;UNTIL=20261231T090000")},
                 {"loc": [*RULE_0, "deploymentWindow", "rrule"]}, id="floating-until"),
    pytest.param({"rules": window(durationMinutes=0)}, {"loc": [*RULE_0, "deploymentWindow", "durationMinutes"]},
                 id="duration-zero"),
    pytest.param({"rules": [{"anyApproval": {"minApprovals": 0}}]}, {"loc": [*RULE_0, "anyApproval", "minApprovals"]},
                 id="min-approvals-zero"),
    pytest.param({"rules": [APPROVAL, {"versionSelector": {"selector": "version.tag =="}}]},
                 cel([*RULE_1, "versionSelector", "selector"], "version.tag ==", 1, 13), id="version-selector-cel"),
    pytest.param({"rules": [APPROVAL, {"condition": {"expression": "resource.kind == 'vm' &&"}}]},
                 cel([*RULE_1, "condition", "expression"], "resource.kind == 'vm' &&", 1, 23), id="condition-cel"),
    pytest.param({"rules": [APPROVAL, {"environmentProgression": {
                     "dependsOnEnvironmentSelector": "environment.name == 'staging' &&\n version.tag == 'x'"}}]},
                 cel([*RULE_1, "environmentProgression", "dependsOnEnvironmentSelector"],
                     "environment.name == 'staging' &&\n version.tag == 'x'", 2, 2),
                 id="progression-selector-cel"),
    pytest.param({"rules": [APPROVAL, {"deploymentDependency": {"dependsOn": "deployment.slug == ("}}]},
                 cel([*RULE_1, "deploymentDependency", "dependsOn"], "deployment.slug == (", 1, 20),
                 id="depends-on-cel"),
    pytest.param({"rules": [{"environmentProgression": {"dependsOnEnvironmentSelector": "true",
                                                        "minimumSuccessPercentage": 101}}]},
                 {"loc": [*RULE_0, "environmentProgression", "minimumSuccessPercentage"]}, id="success-101"),
    pytest.param({"rules": [{"retry": {"retryOnStatuses": ["failure", "successful"]}}]},
                 {"loc": [*RULE_0, "retry", "retryOnStatuses"]}, id="retry-on-success"),
    pytest.param({"rules": [{"id": "gate", **APPROVAL}, {"id": "gate", "retry": {}}]}, {"loc": ["body", "rules"]},
                 id="duplicate-rule-ids"),
    pytest.param({"rules": [{"id": 7, **APPROVAL}]}, {"loc": [*RULE_0, "id"]}, id="rule-id-not-a-string"),
    pytest.param({"rules": [APPROVAL] * 101}, {"loc": ["body", "rules"]}, id="101-rules"),
    pytest.param({"priority": "high"}, {"loc": ["body", "priority"]}, id="priority-not-an-int"),
    pytest.param({"owner": "sre"}, {"loc": ["body", "owner"]}, id="unknown-field"),
    pytest.param({"rules": [{"verification": {"metrics": [{"name": "m", "provider": {"type": "sleep"},
                                                           "successCondition": "result.ok =="}]}}]},
                 cel([*RULE_0, "verification", "metrics", 0, "successCondition"], "result.ok ==", 1, 11),
                 id="verification-condition-syntax"),
    pytest.param({"rules": [{"verification": {"metrics": [{"name": "m", "provider": {"type": "nagios"}}]}}]},
                 {"loc": [*RULE_0, "verification", "metrics", 0, "provider"]}, id="verification-unknown-provider"),
    pytest.param({"rules": [{"verification": {"metrics": [
        {"name": "m", "provider": {"type": "http", "url": "https://{{resource.secret.x}/health"}}]}}]},
                 {"loc": [*RULE_0, "verification", "metrics", 0, "provider", "http", "url"]},
                 id="verification-bad-template"),
    pytest.param({"rules": [{"verification": {"metrics": [{"name": "m", "provider": {"type": "sleep"}}],
                                              "onFailure": "panic"}}]},
                 {"loc": [*RULE_0, "verification", "onFailure"]}, id="verification-on-failure"),
    pytest.param({"rules": [{"enforcement": "warn", "verification": {"metrics": [
        {"name": "m", "provider": {"type": "sleep"}}]}}]}, {"loc": [*RULE_0, "enforcement"]},
                 id="verification-has-no-warn-mode"),
]


@pytest.mark.parametrize(("change", "problem"), INVALID)
def test_an_invalid_policy_is_a_422_naming_the_field_and_stores_nothing(
    client: TestClient, change: dict[str, Any], problem: dict[str, Any]
) -> None:
    existing = post(client, "/v1/policies", PROD_GATES)
    before = stored(client)
    attempts = [
        client.post("/v1/policies", json={**PROD_GATES, "name": "new-gates", **change}),
        client.put("/v1/policies/prod-gates", json={**PROD_GATES, **change}),
        client.put("/v1/policies/new-gates", json={**PROD_GATES, "name": "new-gates", **change}),
        client.patch(f"/v1/policies/{existing['id']}", json=change),
    ]
    for response in attempts:
        assert response.status_code == 422, (response.request.method, response.text)
        found = response.json()["detail"]
        assert any(all(p.get(k) == v for k, v in problem.items()) for p in found), found
        assert all(p["msg"] for p in found)
        for p in found:
            if p["type"] == "cel_syntax":  # the message says where, too
                assert f"line {p['line']}, column {p['column']}" in p["msg"]
    assert stored(client) == before


def test_cel_nested_too_deeply_is_a_422_not_a_500(client: TestClient) -> None:
    # Compiling recursed per nesting level: this escaped as RecursionError (a 500) after seconds of work.
    deep = "(" * 200 + "true" + ")" * 200
    post(client, "/v1/policies", PROD_GATES)
    before = stored(client)
    for change, loc in (
        ({"selector": deep}, ["body", "selector"]),
        ({"rules": [APPROVAL, {"versionSelector": {"selector": deep}}]}, [*RULE_1, "versionSelector", "selector"]),
        ({"rules": [{"condition": {"expression": " || ".join(["resource.kind == 'vm'"] * 3000)}}]},
         [*RULE_0, "condition", "expression"]),
    ):
        response = client.post("/v1/policies", json={**PROD_GATES, "name": "deep", **change})
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert (problem["loc"], problem["type"], problem["line"], problem["column"]) == (loc, "cel_syntax", 1, 1)
        assert problem["expression"]
    assert stored(client) == before


def test_a_duplicate_policy_name_is_a_conflict_and_stores_nothing(client: TestClient) -> None:
    post(client, "/v1/policies", PROD_GATES)
    other = post(client, "/v1/policies", {"name": "staging-gates"})
    before = stored(client)
    for response in (
        client.post("/v1/policies", json={**PROD_GATES, "priority": 1}),
        client.put(f"/v1/policies/{other['id']}", json={**PROD_GATES, "rules": []}),
        client.patch("/v1/policies/staging-gates", json={"name": "prod-gates"}),
    ):
        assert response.status_code == 409, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert stored(client) == before


# ------------------------------------------------------------------------------------- approvals


def inventory(client: TestClient) -> dict[str, Any]:
    """payments: production (two resources) and staging; deployment api with version 1.0.0 by ci."""
    system = post(client, "/v1/systems", {"name": "payments"})
    search = post(client, "/v1/systems", {"name": "search"})
    for identifier, tier in (("use1-a", "prod"), ("use1-b", "prod"), ("use1-s", "staging")):
        post(client, "/v1/resources", {"identifier": identifier, "name": identifier, "kind": "k8s",
                                       "metadata": {"tier": tier}})
    prod = post(client, "/v1/environments", {"systemId": system["id"], "name": "production",
                                             "resourceSelector": "resource.metadata.tier == 'prod'"})
    staging = post(client, "/v1/environments", {"systemId": system["id"], "name": "staging",
                                                "resourceSelector": "resource.metadata.tier == 'staging'"})
    foreign = post(client, "/v1/environments", {"systemId": search["id"], "name": "production",
                                                "resourceSelector": "resource.metadata.tier == 'prod'"})
    deployment = post(client, "/v1/deployments", {"systemId": system["id"], "name": "API", "slug": "api"})
    version = post(client, f"/v1/deployments/{deployment['id']}/versions", {"tag": "1.0.0", "createdBy": "ci"})
    targets = items(client, "/v1/release-targets", environmentId=prod["id"])
    return {"prod": prod, "staging": staging, "foreign": foreign, "deployment": deployment, "version": version,
            "target": targets[0]}


def approve(client: TestClient, headers: dict[str, str], version: dict[str, Any], environment: dict[str, Any],
            status: str = "approved", reason: str = "") -> Any:
    body = {"versionId": version["id"], "environmentId": environment["id"], "status": status, "reason": reason}
    return client.post("/v1/approvals", json=body, headers=headers)


def pending(client: TestClient, headers: dict[str, str]) -> list[tuple[str, str, int, int]]:
    response = client.get("/v1/approvals", params={"pending": "true"}, headers=headers)
    assert response.status_code == 200, response.text
    return [(p["versionTag"], p["environmentName"], p["approved"], p["required"]) for p in response.json()["items"]]


def test_only_approvers_and_admins_approve(client: TestClient) -> None:
    w = inventory(client)
    for role in ("operator", "viewer"):
        response = approve(client, bearer(client, role), w["version"], w["prod"])
        assert response.status_code == 403, response.text
    assert approve(client, bearer(client, "approver"), w["version"], w["prod"]).status_code == 201
    assert approve(client, {}, w["version"], w["prod"]).status_code == 201  # the client's admin token
    assert {a["user"] for a in items(client, "/v1/approvals")} == {"approver-1", "admin"}


def test_a_later_approval_by_the_same_user_replaces_the_earlier(client: TestClient, clock: FakeClock) -> None:
    w = inventory(client)
    alice = bearer(client, "approver", "alice")
    first = approve(client, alice, w["version"], w["prod"], "rejected", "tests are red")
    assert first.status_code == 201 and first.json()["user"] == "alice"
    clock.advance(timedelta(minutes=5))
    second = approve(client, alice, w["version"], w["prod"], "approved", "fixed")
    assert second.status_code == 201
    assert second.json()["id"] == first.json()["id"]
    records = items(client, "/v1/approvals", versionId=w["version"]["id"])
    assert [(r["user"], r["status"], r["reason"], r["createdAt"]) for r in records] == [
        ("alice", "approved", "fixed", "2026-03-02T14:05:00Z")]
    # Per environment, not per version: staging is another record.
    assert approve(client, alice, w["version"], w["staging"]).status_code == 201
    assert len(items(client, "/v1/approvals", versionId=w["version"]["id"])) == 2
    audit = items(client, "/v1/audit", entityId=first.json()["id"])
    assert [(a["action"], a["actor"]) for a in audit] == [("create", "alice"), ("update", "alice")]
    assert audit[1]["before"]["status"] == "rejected" and audit[1]["after"]["status"] == "approved"


def test_approval_references_are_checked(client: TestClient) -> None:
    w = inventory(client)
    approver = bearer(client, "approver")
    missing = "01900000-0000-7000-8000-000000000000"
    cases = [
        ({"id": missing}, w["prod"], "versionId"),
        (w["version"], {"id": missing}, "environmentId"),
        (w["version"], w["foreign"], "environmentId"),  # an environment of another system
    ]
    for version, environment, field in cases:
        response = approve(client, approver, version, environment)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", field]
    bad_status = client.post("/v1/approvals", headers=approver, json={
        "versionId": w["version"]["id"], "environmentId": w["prod"]["id"], "status": "maybe"})
    assert bad_status.status_code == 422
    assert items(client, "/v1/approvals") == []


def test_pending_approvals_show_k_of_n_and_hide_what_the_caller_answered(client: TestClient) -> None:
    w = inventory(client)
    post(client, "/v1/policies", PROD_GATES)  # production only: two approvals
    alice, bob = bearer(client, "approver", "alice"), bearer(client, "approver", "bob")
    assert pending(client, alice) == pending(client, bob) == [("1.0.0", "production", 0, 2)]
    [entry] = client.get("/v1/approvals", params={"pending": "true"}, headers=alice).json()["items"]
    assert (entry["versionId"], entry["environmentId"], entry["policies"], entry["targets"]) == (
        w["version"]["id"], w["prod"]["id"], ["prod-gates"], 2)
    assert approve(client, alice, w["version"], w["prod"]).status_code == 201
    assert pending(client, alice) == []  # answered
    assert pending(client, bob) == [("1.0.0", "production", 1, 2)]
    assert approve(client, bob, w["version"], w["prod"], "rejected", "not today").status_code == 201
    assert pending(client, bob) == []
    carol = bearer(client, "approver", "carol")
    [vetoed] = client.get("/v1/approvals", params={"pending": "true"}, headers=carol).json()["items"]
    assert (vetoed["approvers"], vetoed["rejectedBy"], vetoed["required"]) == (["alice"], ["bob"], 2)
    assert approve(client, bob, w["version"], w["prod"]).status_code == 201  # bob lifts his veto
    assert pending(client, carol) == []  # 2/2: nothing awaits anyone


def test_pending_approvals_still_count_approvals_during_a_veto(client: TestClient) -> None:
    w = inventory(client)
    post(client, "/v1/policies", PROD_GATES)
    assert approve(client, bearer(client, "approver", "alice"), w["version"], w["prod"]).status_code == 201
    assert approve(client, bearer(client, "approver", "bob"), w["version"], w["prod"], "rejected").status_code == 201
    assert pending(client, bearer(client, "approver", "carol")) == [("1.0.0", "production", 1, 2)]


# ------------------------------------------------------------------------------------- overrides


def override(client: TestClient, version: dict[str, Any], **fields: Any) -> Any:
    body = {"versionId": version["id"], "reason": "incident 42: hotfix", "expiresAt": "2026-03-03T14:00:00Z",
            **fields}
    return client.post("/v1/overrides", json={k: v for k, v in body.items() if v is not None})


def explain(client: TestClient, target: dict[str, Any], **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/release-targets/{target['id']}/decision", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def verdict(decision: dict[str, Any], rule_type: str, candidate: int = 0) -> dict[str, Any]:
    return next(v for v in decision["candidates"][candidate]["verdicts"] if v["ruleType"] == rule_type)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"reason": None}, ["body", "reason"]),
        ({"reason": ""}, ["body", "reason"]),
        ({"expiresAt": None}, ["body", "expiresAt"]),
        ({"expiresAt": "2026-03-03T14:00:00"}, ["body", "expiresAt"]),  # no offset
        ({"expiresAt": "2026-03-09T14:00:01Z"}, ["body", "expiresAt"]),  # a second over 7 days
        ({"expiresAt": "2026-03-02T13:59:59Z"}, ["body", "expiresAt"]),  # in the past
        ({"expiresAt": "2026-03-02T14:00:00Z"}, ["body", "expiresAt"]),  # now: already over
        ({"environmentId": "01900000-0000-7000-8000-000000000000"}, ["body", "environmentId"]),
        ({"policyId": "01900000-0000-7000-8000-000000000000"}, ["body", "policyId"]),
    ],
)
def test_an_invalid_override_is_a_422(client: TestClient, fields: dict[str, Any], loc: list[str]) -> None:
    w = inventory(client)
    response = override(client, w["version"], **fields)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert items(client, "/v1/overrides") == [] and items(client, "/v1/audit", entityType="override") == []




@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        pytest.param({"reason": "   "}, ["body", "reason"], id="blank-reason"),
        pytest.param({"ruleTypes": ["anyAproval"]}, ["body", "ruleTypes", 0], id="unknown-rule-type"),
        pytest.param({"ruleTypes": ["verification"]}, ["body", "ruleTypes", 0], id="not-a-gate"),
        pytest.param({"ruleTypes": []}, ["body", "ruleTypes"], id="no-rule-types"),
        pytest.param({"environmentId": "{foreign}"}, ["body", "environmentId"], id="environment-of-another-system"),
    ],
)
def test_an_override_that_could_never_apply_is_a_422(
    client: TestClient, fields: dict[str, Any], loc: list[Any]
) -> None:
    w = inventory(client)
    fields = {k: v.format(foreign=w["foreign"]["id"]) if isinstance(v, str) else v for k, v in fields.items()}
    response = override(client, w["version"], **fields)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert items(client, "/v1/overrides") == []


def test_an_override_opens_its_gates_until_revoked_and_is_audited(client: TestClient, clock: FakeClock) -> None:
    w = inventory(client)
    policy = post(client, "/v1/policies", PROD_GATES)
    operator, viewer = bearer(client, "operator", "oncall"), bearer(client, "viewer")
    before = explain(client, w["target"])
    assert (before["outcome"], verdict(before, "anyApproval")["reason"]) == ("wait", "AwaitingApproval")

    assert client.post("/v1/overrides", headers=viewer, json={
        "versionId": w["version"]["id"], "reason": "x", "expiresAt": "2026-03-03T00:00:00Z"}).status_code == 403
    seven_days = override(client, w["version"], expiresAt="2026-03-09T14:00:00Z")
    assert seven_days.status_code == 201, seven_days.text  # exactly 7 days is allowed
    assert client.delete(f"/v1/overrides/{seven_days.json()['id']}").status_code == 204

    created = client.post("/v1/overrides", headers=operator, json={
        "versionId": w["version"]["id"], "environmentId": w["prod"]["id"], "policyId": policy["id"],
        "ruleTypes": ["anyApproval"], "reason": "incident 42: hotfix", "expiresAt": "2026-03-02T18:00:00Z"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["createdBy"], body["createdAt"], body["revokedAt"]) == ("oncall", "2026-03-02T14:00:00Z", None)
    assert [o["id"] for o in items(client, "/v1/overrides", active="true")] == [body["id"]]

    during = explain(client, w["target"])
    approval = verdict(during, "anyApproval")
    assert (during["outcome"], approval["status"], approval["reason"]) == ("go", "allowed", "Overridden")
    assert approval["nextCheckAt"] == "2026-03-02T18:00:00Z"
    assert verdict(during, "deploymentWindow")["reason"] == "InsideDeploymentWindow"  # not named: untouched
    after_expiry = explain(client, w["target"], at="2026-03-02T18:00:00Z")
    assert verdict(after_expiry, "anyApproval")["reason"] == "AwaitingApproval"

    clock.advance(timedelta(minutes=10))
    assert client.delete(f"/v1/overrides/{body['id']}", headers=operator).status_code == 204
    again = client.delete(f"/v1/overrides/{body['id']}", headers=operator)
    assert again.status_code == 409, again.text
    revoked = client.get(f"/v1/overrides/{body['id']}").json()
    assert (revoked["revokedAt"], revoked["revokedBy"]) == ("2026-03-02T14:10:00Z", "oncall")
    assert items(client, "/v1/overrides", active="true") == []
    assert verdict(explain(client, w["target"]), "anyApproval")["reason"] == "AwaitingApproval"

    audit = items(client, "/v1/audit", entityId=body["id"])
    assert [(a["action"], a["actor"]) for a in audit] == [("create", "oncall"), ("revoke", "oncall")]
    assert audit[0]["before"] is None and audit[0]["after"]["reason"] == "incident 42: hotfix"
    assert audit[1]["before"]["revokedAt"] is None and audit[1]["after"]["revokedBy"] == "oncall"
    assert client.delete("/v1/overrides/01900000-0000-7000-8000-000000000000").status_code == 404


# ------------------------------------------------------------------------------------- explain


def test_explain_takes_a_version_by_tag_or_id_and_an_instant(client: TestClient, clock: FakeClock) -> None:
    w = inventory(client)
    post(client, "/v1/policies", {"name": "office", "rules": [{"deploymentWindow": OFFICE_HOURS}]})
    clock.advance(timedelta(minutes=1))
    newer = post(client, f"/v1/deployments/{w['deployment']['id']}/versions", {"tag": "1.1.0"})

    now = explain(client, w["target"])
    assert (now["outcome"], now["desiredVersion"]["tag"], now["evaluatedAt"]) == ("go", "1.1.0", "2026-03-02T14:01:00Z")
    assert [c["version"]["tag"] for c in now["candidates"]] == ["1.1.0"]
    assert now["decisionId"] == explain(client, w["target"])["decisionId"]  # same facts, same instant

    for key in ("1.0.0", w["version"]["id"]):
        asked = explain(client, w["target"], version=key)
        assert [c["version"]["tag"] for c in asked["candidates"]] == ["1.0.0"]
        assert (asked["outcome"], asked["desiredVersion"]["id"]) == ("go", w["version"]["id"])
    by_id = explain(client, w["target"], version=newer["id"])
    assert by_id["desiredVersion"]["tag"] == "1.1.0"

    # Monday 17:00 New York the window closes; the answer for later says so, and when it reopens.
    evening = explain(client, w["target"], at="2026-03-02T22:00:00Z")
    window = verdict(evening, "deploymentWindow")
    assert (evening["outcome"], window["status"], window["reason"]) == ("wait", "pending", "OutsideDeploymentWindow")
    assert (evening["evaluatedAt"], evening["eligibleAt"]) == ("2026-03-02T22:00:00Z", "2026-03-03T14:00:00Z")
    assert window["nextCheckAt"] == "2026-03-03T14:00:00Z"
    assert evening["decisionId"] != now["decisionId"]
    in_offset = explain(client, w["target"], at="2026-03-02T18:00:00-04:00")  # 22:00Z, written in another offset
    assert in_offset["evaluatedAt"] == "2026-03-02T22:00:00Z" and in_offset["outcome"] == "wait"
    tuesday = explain(client, w["target"], at="2026-03-03T14:00:00Z")
    assert verdict(tuesday, "deploymentWindow")["reason"] == "InsideDeploymentWindow"
    assert tuesday["outcome"] == "go"


@pytest.mark.parametrize(
    ("path", "params", "status", "loc"),
    [
        ("{target}", {"version": "9.9.9"}, 422, ["query", "version"]),
        ("{target}", {"version": "01900000-0000-7000-8000-000000000000"}, 422, ["query", "version"]),
        ("{target}", {"at": "2026-03-02T22:00:00"}, 422, ["query", "at"]),  # no offset
        ("{target}", {"at": "tomorrow"}, 422, ["query", "at"]),
        ("01900000-0000-7000-8000-000000000000", {}, 404, ["path", "id"]),
        ("not-a-target", {}, 404, ["path", "id"]),
    ],
)
def test_explain_rejects_unknown_versions_targets_and_instants(
    client: TestClient, path: str, params: dict[str, str], status: int, loc: list[str]
) -> None:
    w = inventory(client)
    worker = {"systemId": w["deployment"]["systemId"], "name": "Worker", "slug": "worker"}
    other = post(client, "/v1/deployments", worker)
    post(client, f"/v1/deployments/{other['id']}/versions", {"tag": "9.9.9"})  # another deployment's version
    response = client.get(f"/v1/release-targets/{path.format(target=w['target']['id'])}/decision", params=params)
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"] == loc


def test_explain_lists_overridden_single_rules_and_the_warnings(client: TestClient) -> None:
    w = inventory(client)
    fast = {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": 0}}
    slow = {"gradualRollout": {"rolloutType": "linear", "timeScaleInterval": 86400}}
    post(client, "/v1/policies", {"name": "fast", "priority": 10, "rules": [fast]})
    post(client, "/v1/policies", {"name": "slow", "priority": 1, "rules": [
        slow, {"versionSelector": {"selector": "version.tag.startsWith('2.')"}, "enforcement": "warn"}]})
    decision = explain(client, w["target"])
    assert decision["outcome"] == "go"
    assert verdict(decision, "gradualRollout")["policyName"] == "fast"
    assert [(r["policyName"], r["ruleType"]) for r in decision["overriddenRules"]] == [("slow", "gradualRollout")]
    assert [(x["ruleType"], x["enforcement"], x["reason"]) for x in decision["warnings"]] == [
        ("versionSelector", "warn", "VersionNotSelected")]
    assert [p["name"] for p in decision["policies"]] == ["fast", "slow"]
    assert T0.isoformat().replace("+00:00", "Z") == decision["evaluatedAt"]
