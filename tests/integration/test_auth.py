"""Authentication and authorisation (SPEC §8): bearer tokens, what each role may do, the token
lifecycle (shown once, stored hashed, revocation audited), and bootstrapping the first admin."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from controller.clock import FakeClock
from controller.settings import Settings
from controller.store.db import Store
from tests.conftest import ADMIN_TOKEN

Request = tuple[str, str, Any]  # method, path, JSON body or None


def created(client: TestClient, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_length(client: TestClient) -> int:
    return len(client.get("/v1/audit", params={"limit": 1000}).json()["items"])


def assert_problem(response: Any, status: int, kind: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    problems = response.json()["detail"]
    assert problems and all({"loc", "msg", "type"} <= p.keys() for p in problems), response.text
    assert problems[0]["type"] == kind and mentions in problems[0]["msg"], response.text


# -- authentication -------------------------------------------------------------------------------

MALFORMED = {
    "no header": None,
    "empty header": "",
    "basic scheme": "Basic YWRtaW46YWRtaW4=",
    "scheme only": "Bearer",
    "scheme and blank": "Bearer   ",
    "no space": f"Bearer{ADMIN_TOKEN}",
    "other scheme": f"Token {ADMIN_TOKEN}",
    "unknown token": "Bearer rg_not-a-token",
    "token with a suffix": f"Bearer {ADMIN_TOKEN}x",
    "token and junk": f"Bearer {ADMIN_TOKEN} junk",
    "very long token": "Bearer " + "x" * 10_000,
    "non-ASCII token": "Bearer tökén",
}
GUARDED = [("GET", "/v1/systems"), ("POST", "/v1/systems"), ("GET", "/v1/tokens")]


def test_missing_malformed_or_unknown_credentials_are_401_with_a_bearer_challenge(
    client: TestClient, subtests: pytest.Subtests
) -> None:
    anonymous = TestClient(client.app)  # the lifespan already ran for `client`
    before = audit_length(client)
    for label, header in MALFORMED.items():
        for method, path in GUARDED:
            with subtests.test(f"{label}: {method} {path}"):
                headers = {} if header is None else {"Authorization": header.encode()}
                response = anonymous.request(method, path, json={"name": "sneaky"}, headers=headers)
                assert_problem(response, 401, "http")
                assert response.headers["www-authenticate"] == "Bearer"
    assert audit_length(client) == before
    assert anonymous.get("/v1/systems", headers={"Authorization": f"bearer {ADMIN_TOKEN}"}).status_code == 200


def test_a_revoked_token_is_401(client: TestClient) -> None:
    token = created(client, "/v1/tokens", {"name": "ci", "role": "operator"})
    assert client.get("/v1/systems", headers=bearer(token["token"])).status_code == 200
    assert client.delete(f"/v1/tokens/{token['id']}").status_code == 204
    response = client.get("/v1/systems", headers=bearer(token["token"]))
    assert_problem(response, 401, "http", "revoked")
    assert response.headers["www-authenticate"] == "Bearer"


# -- authorisation --------------------------------------------------------------------------------

ROLES = ("admin", "operator", "approver", "viewer", "agent")
MAY = {
    "read": {"admin", "operator", "approver", "viewer"},
    "write": {"admin", "operator"},
    "tokens": {"admin"},
}


def requests_for(role: str, w: dict[str, str]) -> dict[str, list[Request]]:
    """What each kind of access looks like, with names unique to ``role`` so every role's allowed
    writes can succeed in the same database."""
    return {
        "read": [
            ("GET", "/v1/systems", None),
            ("GET", f"/v1/systems/{w['system']}", None),
            ("GET", "/v1/resources", None),
            ("GET", f"/v1/resources/{w['resource']}", None),
            ("GET", "/v1/environments", None),
            ("GET", "/v1/deployments", None),
            ("GET", f"/v1/deployments/{w['deployment']}/versions", None),
            ("GET", f"/v1/versions/{w['version']}", None),
            ("GET", "/v1/job-agents", None),
            ("GET", "/v1/release-targets", None),
            ("GET", "/v1/audit", None),
        ],
        "write": [
            ("POST", "/v1/systems", {"name": f"sys-{role}"}),
            ("PATCH", f"/v1/systems/{w['system']}", {"description": f"by {role}"}),
            ("DELETE", f"/v1/systems/{w[f'doomed-system-{role}']}", None),
            ("POST", "/v1/resources", {"identifier": f"res-{role}", "name": "r", "kind": "vm"}),
            ("PUT", "/v1/resources", [{"identifier": f"bulk-{role}", "name": "r", "kind": "vm"}]),
            ("PATCH", f"/v1/resources/{w['resource']}", {"name": f"by {role}"}),
            ("DELETE", f"/v1/resources/{w[f'doomed-resource-{role}']}", None),
            ("POST", "/v1/environments", {"systemId": w["system"], "name": f"env-{role}"}),
            ("POST", "/v1/deployments", {"systemId": w["system"], "name": "d", "slug": f"dep-{role}"}),
            ("POST", f"/v1/deployments/{w['deployment']}/versions", {"tag": f"1.0.0-{role}"}),
            ("PATCH", f"/v1/versions/{w['version']}", {"message": f"by {role}"}),
            ("POST", "/v1/job-agents", {"name": f"agent-{role}"}),
        ],
        "tokens": [
            ("GET", "/v1/tokens", None),
            ("POST", "/v1/tokens", {"name": f"tok-{role}", "role": "viewer"}),
            ("DELETE", f"/v1/tokens/{w[f'doomed-token-{role}']}", None),
        ],
    }


@pytest.fixture
def world(client: TestClient) -> dict[str, str]:
    system = created(client, "/v1/systems", {"name": "payments"})["id"]
    agent = created(client, "/v1/job-agents", {"name": "runner"})["id"]
    deployment = created(client, "/v1/deployments", {"systemId": system, "name": "API", "slug": "api"})["id"]
    w = {
        "system": system,
        "agent": agent,
        "deployment": deployment,
        "resource": created(client, "/v1/resources", {"identifier": "c1", "name": "c1", "kind": "k8s"})["id"],
        "version": created(client, f"/v1/deployments/{deployment}/versions", {"tag": "1.0.0"})["id"],
    }
    for role in ROLES:
        w[f"doomed-system-{role}"] = created(client, "/v1/systems", {"name": f"doomed-{role}"})["id"]
        w[f"doomed-resource-{role}"] = created(
            client, "/v1/resources", {"identifier": f"doomed-{role}", "name": "d", "kind": "vm"}
        )["id"]
        w[f"doomed-token-{role}"] = created(client, "/v1/tokens", {"name": f"doomed-{role}", "role": "viewer"})["id"]
    return w


def test_each_role_may_do_exactly_what_spec_section_8_grants(
    client: TestClient, world: dict[str, str], subtests: pytest.Subtests
) -> None:
    for role in ROLES:
        body = {"name": f"as-{role}", "role": role} | ({"jobAgentId": world["agent"]} if role == "agent" else {})
        token = created(client, "/v1/tokens", body)["token"]
        table = requests_for(role, world)
        allowed = [(kind, r) for kind, requests in table.items() if role in MAY[kind] for r in requests]
        forbidden = [(kind, r) for kind, requests in table.items() if role not in MAY[kind] for r in requests]
        before = audit_length(client)
        for kind, (method, path, payload) in forbidden:
            with subtests.test(f"{role} may not {kind}: {method} {path}"):
                response = client.request(method, path, json=payload, headers=bearer(token))
                assert_problem(response, 403, "forbidden", role)
        with subtests.test(f"{role}: forbidden requests changed nothing"):
            assert audit_length(client) == before
        for kind, (method, path, payload) in allowed:
            with subtests.test(f"{role} may {kind}: {method} {path}"):
                response = client.request(method, path, json=payload, headers=bearer(token))
                assert 200 <= response.status_code < 300, response.text


def test_authorisation_is_checked_before_the_body_is_validated(client: TestClient) -> None:
    viewer = created(client, "/v1/tokens", {"name": "v", "role": "viewer"})["token"]
    response = client.post("/v1/systems", json={"bogus": True}, headers=bearer(viewer))
    assert_problem(response, 403, "forbidden", "viewer")


# -- the token lifecycle --------------------------------------------------------------------------


def test_the_secret_is_shown_once_and_only_its_sha256_is_stored(client: TestClient, store: Store) -> None:
    response = client.post("/v1/tokens", json={"name": "ci", "role": "operator"})
    assert response.status_code == 201, response.text
    token = response.json()
    secret = token.pop("token")
    assert secret.startswith("rg_") and len(secret) >= 40
    assert set(token) == {"id", "name", "role", "jobAgentId", "createdAt", "revokedAt"}
    assert (token["name"], token["role"], token["jobAgentId"], token["revokedAt"]) == ("ci", "operator", None, None)
    assert client.get("/v1/systems", headers=bearer(secret)).status_code == 200

    digest = hashlib.sha256(secret.encode()).hexdigest()
    listed = client.get("/v1/tokens").text + client.get(f"/v1/audit?entityId={token['id']}").text
    assert secret not in listed and digest not in listed
    assert all("token" not in item for item in client.get("/v1/tokens").json()["items"])
    with store.engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(text("SELECT * FROM api_token"))]
    mine = [row for row in rows if row["id"] == token["id"]]
    assert len(mine) == 1 and mine[0]["token_hash"] == digest
    assert not any(secret in str(value) for row in rows for value in row.values())
    bootstrap = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    assert [row["token_hash"] for row in rows if row["name"] == "admin"] == [bootstrap]


def test_an_agent_token_needs_a_job_agent_and_only_an_agent_token_takes_one(client: TestClient) -> None:
    agent = created(client, "/v1/job-agents", {"name": "runner"})
    before = client.get("/v1/tokens").json()["items"]
    rejected = {
        "agent without jobAgentId": ({"name": "a", "role": "agent"}, "missing"),
        "agent with an unknown jobAgentId": ({"name": "a", "role": "agent", "jobAgentId": "nope"}, "reference"),
        "operator with a jobAgentId": ({"name": "o", "role": "operator", "jobAgentId": agent["id"]}, "value_error"),
        "a role that does not exist": ({"name": "r", "role": "root"}, "enum"),
    }
    for label, (body, kind) in rejected.items():
        response = client.post("/v1/tokens", json=body)
        assert response.status_code == 422, f"{label}: {response.text}"
        problem = response.json()["detail"][0]
        assert problem["type"] == kind and problem["loc"][:2] in (["body", "jobAgentId"], ["body", "role"]), label
    assert client.get("/v1/tokens").json()["items"] == before
    bound = created(client, "/v1/tokens", {"name": "a", "role": "agent", "jobAgentId": agent["id"]})
    assert bound["jobAgentId"] == agent["id"]
    assert created(client, "/v1/tokens", {"name": "v", "role": "viewer", "jobAgentId": None})["jobAgentId"] is None


def test_revocation_is_audited_once_and_the_listing_shows_it(client: TestClient, clock: FakeClock) -> None:
    token = created(client, "/v1/tokens", {"name": "ci", "role": "viewer"})
    assert client.delete(f"/v1/tokens/{token['id']}").status_code == 204
    assert client.delete(f"/v1/tokens/{token['id']}").status_code == 204  # idempotent
    entries = client.get("/v1/audit", params={"entityType": "token", "entityId": token["id"]}).json()["items"]
    assert [e["action"] for e in entries] == ["create", "revoke"]
    revoke = entries[1]
    assert (revoke["actor"], revoke["actorRole"]) == ("admin", "admin")
    assert revoke["before"]["revokedAt"] is None and revoke["after"]["revokedAt"] is not None
    listed = {t["id"]: t for t in client.get("/v1/tokens").json()["items"]}
    assert listed[token["id"]]["revokedAt"] == revoke["at"]


# -- bootstrapping the first admin ----------------------------------------------------------------


@contextmanager
def start(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    """A process start: open the store, run the app's lifespan (which bootstraps), serve."""
    store = Store.open(settings)
    try:
        with TestClient(create_app(settings, clock=clock, store=store, run_loop=False)) as client:
            yield client
    finally:
        store.engine.dispose()


def test_the_admin_token_from_the_environment_bootstraps_an_admin_once(database_url: str, clock: FakeClock) -> None:
    environ = {"RELEASEGATE_DATABASE_URL": database_url, "RELEASEGATE_ADMIN_TOKEN": "rg_from-the-environment-42"}
    settings = Settings.from_env(environ)
    for _ in range(2):  # a restart must not add a second row for the same token
        with start(settings, clock) as client:
            response = client.get("/v1/tokens", headers=bearer("rg_from-the-environment-42"))
            assert response.status_code == 200, response.text
            assert [(t["name"], t["role"]) for t in response.json()["items"]] == [("admin", "admin")]


def test_without_an_admin_token_one_is_generated_and_printed_once(
    database_url: str, clock: FakeClock, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(database_url=database_url, admin_token=None)
    with start(settings, clock) as client:
        out, err = capfd.readouterr()
        printed = re.findall(r"rg_[A-Za-z0-9_-]{20,}", err)
        assert len(printed) == 1, err
        assert printed[0] not in out
        assert client.get("/v1/tokens", headers=bearer(printed[0])).status_code == 200
        assert_problem(client.get("/v1/tokens"), 401, "http")
    with start(settings, clock) as client:  # an admin exists now: nothing is generated or printed
        out, err = capfd.readouterr()
        assert "rg_" not in out + err
        assert len(client.get("/v1/tokens", headers=bearer(printed[0])).json()["items"]) == 1
