"""Verification through the API and the loop (SPEC §7), on SQLite and PostgreSQL, against real HTTP
servers on 127.0.0.1 whose answers the tests script.

The world: ``staging`` (resource ``s1``) and ``production`` (``p1``), deployment ``api``. Staging is
verified after each deploy; production needs staging's success *with verification passed*. Time
moves only by ``advance_to``; each ``run()`` is one controller pass, which first takes the
measurements that are due, then reconciles.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from controller.clock import FakeClock
from controller.settings import Settings
from controller.store.db import Store
from controller.store.verifier import claim_due
from tests.conftest import ADMIN_TOKEN, T0
from tests.integration.world import World, as_token, build, ok
from tests.probe_servers import Answer, PrometheusServer, ScriptedServer, prometheus_error

SEC, MIN = timedelta(seconds=1), timedelta(minutes=1)
STAGING, PRODUCTION = "environment.name == 'staging'", "environment.name == 'production'"
NEEDS_VERIFIED_STAGING = {"environmentProgression": {"dependsOnEnvironmentSelector": STAGING,
                                                     "requireVerificationPassed": True}}
HEALTHY = Answer(body={"status": "ok", "latencyMs": 20})


def http_metric(url: str, *, timeout: Any = "2s", headers: Mapping[str, str] | None = None,
                **fields: Any) -> dict[str, Any]:
    provider = {"type": "http", "url": url, "timeout": timeout, "headers": dict(headers or {})}
    metric = {"name": "health", "provider": provider, "intervalSeconds": 60, "count": 3,
              "successCondition": "result.json.status == 'ok'"}
    return metric | fields


def pipeline(client: TestClient, clock: FakeClock, *metrics: Mapping[str, Any], on_failure: str = "none") -> World:
    w = build(client, clock, {"s1": "staging", "p1": "prod"}, ["api"])
    w.policy("verify-staging", STAGING, {"verification": {"metrics": list(metrics), "onFailure": on_failure}})
    w.policy("production-after-staging", PRODUCTION, NEEDS_VERIFIED_STAGING)
    return w


def deploy_staging(w: World, tag: str) -> dict[str, Any]:
    """Create the version and let its staging job succeed at the current instant."""
    version = w.version("api", tag)
    w.run()
    staging = w.target("api", "staging", "s1")
    job = next(j for j in w.jobs(staging) if j["versionId"] == version["id"])
    w.finish(job["id"])
    return version


def measure(w: World, count: int) -> None:
    """Start the run (a pass), then a pass a minute apart from T0: its first ``count`` measurements."""
    w.run()
    for minute in range(count):
        w.advance_to(T0 + minute * MIN)
        w.run()


def runs(w: World, target: str) -> list[dict[str, Any]]:
    return ok(w.client.get("/v1/verifications", params={"releaseTargetId": target}))["items"]


def run_detail(w: World, run_id: str) -> dict[str, Any]:
    return ok(w.client.get(f"/v1/verifications/{run_id}"))


def production_jobs(w: World) -> list[dict[str, Any]]:
    return w.jobs(w.target("api", "production", "p1"))


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


# ------------------------------------------------------------------------------------- outcomes


def test_a_passing_run_measures_on_schedule_and_then_lets_production_deploy(
    client: TestClient, clock: FakeClock, health: ScriptedServer
) -> None:
    health.script("/health", HEALTHY)
    url = health.url + "/health?host={{resource.identifier}}&v={{version.tag}}"
    w = pipeline(client, clock, http_metric(url, headers={"X-Env": "{{environment.name}}"}))
    v1 = deploy_staging(w, "1.0.0")
    staging, production = w.target("api", "staging", "s1"), w.target("api", "production", "p1")
    w.run()  # the run starts: its first measurement is due now
    (started,) = runs(w, staging)
    assert (started["status"], started["nextMeasurementAt"]) == ("running", T0.isoformat().replace("+00:00", "Z"))
    progression = w.decision(production)["candidates"][0]["verdicts"][0]
    assert (progression["ruleType"], progression["status"]) == ("environmentProgression", "pending")
    explained = w.decision(staging)["verification"]
    assert (explained["status"], explained["versionId"], [r["id"] for r in explained["runs"]]) == (
        "running", v1["id"], [started["id"]])

    for minute in (0, 1, 2):
        w.advance_to(T0 + minute * MIN)
        assert w.run().measurements == 1
    run = run_detail(w, started["id"])
    assert run["status"] == "passed"
    assert [(m["seq"], m["status"], at(m["measuredAt"])) for m in run["measurements"]] == [
        (0, "passed", T0), (1, "passed", T0 + MIN), (2, "passed", T0 + 2 * MIN)]
    assert run["measurements"][0]["result"]["json"] == {"status": "ok", "latencyMs": 20}
    assert run["metrics"][0] | {"nextMeasurementAt": None} == {
        "name": "health", "status": "passed", "message": "3 of 3 measurements passed", "taken": 3, "passed": 3,
        "failed": 0, "inconclusive": 0, "errors": 0, "nextMeasurementAt": None}
    hits = health.hits("/health")
    assert [(h.query, h.headers["x-env"]) for h in hits] == [({"host": ["s1"], "v": ["1.0.0"]}, "staging")] * 3
    # The pass that settled the run also created production's job.
    assert [(j["versionId"], j["status"]) for j in production_jobs(w)] == [(v1["id"], "pending")]
    staging_job = w.jobs(staging)[0]
    assert (staging_job["verification"], at(staging_job["verifiedAt"])) == ("passed", T0 + 2 * MIN)
    w.advance_to(T0 + 10 * MIN)
    assert w.run().measurements == 0 and len(health.hits("/health")) == 3
    exported = client.get("/metrics").text.splitlines()
    assert "releasegate_verification_measurements_total 3.0" in exported
    assert "releasegate_verifications_started_total 1.0" in exported


def test_a_failure_beyond_the_threshold_fails_the_run_and_production_never_deploys(
    client: TestClient, clock: FakeClock, health: ScriptedServer
) -> None:
    health.script("/health", HEALTHY, Answer(503, {"status": "down"}), Answer(503, {"status": "down"}))
    w = pipeline(client, clock, http_metric(health.url + "/health", count=5, failureThreshold=1))
    deploy_staging(w, "1.0.0")
    staging = w.target("api", "staging", "s1")
    w.run()
    statuses = []
    for minute in range(4):
        w.advance_to(T0 + minute * MIN)
        w.run()
        statuses.append(runs(w, staging)[0]["status"])
    assert statuses == ["running", "running", "failed", "failed"]
    run = run_detail(w, runs(w, staging)[0]["id"])
    assert [m["status"] for m in run["measurements"]] == ["passed", "failed", "failed"]
    assert run["message"] == "health: 2 failed measurements exceed failureThreshold 1"
    assert len(health.hits("/health")) == 3  # a failed run takes no more measurements
    assert production_jobs(w) == []
    assert w.jobs(staging)[0]["verification"] == "failed"
    # No rollback was asked for: the failed version stays current.
    assert w.decision(staging)["currentVersion"]["tag"] == "1.0.0"
    assert [j["reason"] for j in w.jobs(staging)] == ["policy"]


def test_successive_passes_end_a_metric_early(client: TestClient, clock: FakeClock, health: ScriptedServer) -> None:
    health.script("/health", HEALTHY)
    w = pipeline(client, clock, http_metric(health.url + "/health", count=10, successThreshold=2))
    deploy_staging(w, "1.0.0")
    measure(w, 2)
    (run,) = runs(w, w.target("api", "staging", "s1"))
    summary = run["metrics"][0]
    assert (run["status"], summary["message"], summary["taken"]) == ("passed", "2 passed in a row", 2)
    assert len(health.hits("/health")) == 2
    assert len(production_jobs(w)) == 1


def test_an_inconclusive_run_waits_for_a_person(client: TestClient, clock: FakeClock, health: ScriptedServer) -> None:
    health.script("/health", Answer(body={"latencyMs": 300}))
    metric = http_metric(health.url + "/health", count=2, successCondition="result.json.latencyMs < 100",
                         failureCondition="result.json.latencyMs > 500")
    w = pipeline(client, clock, metric)
    deploy_staging(w, "1.0.0")
    staging = w.target("api", "staging", "s1")
    measure(w, 2)
    (run,) = runs(w, staging)
    assert (run["status"], run["metrics"][0]["message"]) == (
        "inconclusive", "2 of 2 measurements taken; 2 inconclusive")
    w.advance_to(T0 + 30 * MIN)
    w.run()
    assert production_jobs(w) == [] and len(health.hits("/health")) == 2

    resolve = f"/v1/verifications/{run['id']}/resolve"
    viewer = as_token(client, "viewer", "viewer")
    assert viewer.post(resolve, json={"status": "passed", "reason": "latency is fine"}).status_code == 403
    bad = client.post(resolve, json={"status": "running", "reason": "x"})
    assert (bad.status_code, bad.json()["detail"][0]["loc"]) == (422, ["body", "status"])
    assert client.post(resolve, json={"status": "passed"}).status_code == 422  # a reason is required
    assert runs(w, staging)[0]["status"] == "inconclusive"  # nothing changed by the refusals

    approver = as_token(client, "alice", "approver")
    resolved = ok(approver.post(resolve, json={"status": "passed", "reason": "300 ms is expected during warm-up"}))
    assert (resolved["status"], resolved["resolvedBy"], resolved["resolvedReason"]) == (
        "passed", "alice", "300 ms is expected during warm-up")
    again = approver.post(resolve, json={"status": "failed", "reason": "changed my mind"})
    assert again.status_code == 409
    audit = ok(client.get("/v1/audit", params={"limit": 1000}))["items"]
    assert [(a["actor"], a["before"]["status"], a["after"]["status"]) for a in audit if a["action"] == "resolve"] == [
        ("alice", "inconclusive", "passed")]
    w.run()
    assert len(production_jobs(w)) == 1


def test_provider_errors_count_toward_their_own_threshold_and_never_break_the_loop(
    client: TestClient, clock: FakeClock, health: ScriptedServer
) -> None:
    health.script("/slow", Answer(body={"status": "ok"}, delay=1.5))
    health.script("/text", Answer(body="OK"))
    health.script("/huge", Answer(body=b"x" * (1024 * 1024 + 1)))
    unreachable = "http://127.0.0.1:9/health"  # the discard port: nothing listens there
    metrics = [
        http_metric(health.url + "/slow", name="slow", timeout=0.5),
        http_metric(health.url + "/text", name="not-json"),
        http_metric(health.url + "/huge", name="huge"),
        http_metric(unreachable, name="unreachable"),
        http_metric(health.url + "/{{resource.metadata.missing}}", name="template"),
    ]
    w = pipeline(client, clock, *(m | {"count": 5, "errorThreshold": 1} for m in metrics))
    deploy_staging(w, "1.0.0")
    staging = w.target("api", "staging", "s1")
    w.run()
    w.run()
    first = run_detail(w, runs(w, staging)[0]["id"])
    messages = {m["metric"]: (m["status"], m["message"]) for m in first["measurements"]}
    assert {name: status for name, (status, _) in messages.items()} == dict.fromkeys(
        ("slow", "not-json", "huge", "unreachable", "template"), "error")
    assert messages["slow"][1] == "timed out after 0.5s"
    assert messages["not-json"][1].startswith("successCondition could not be evaluated")
    assert messages["huge"][1] == "the response body exceeds 1048576 bytes"
    assert messages["unreachable"][1].startswith("ConnectError")
    assert messages["template"][1] == "{{resource.metadata.missing}} has no value for this target"
    assert first["status"] == "running"  # one error each: within errorThreshold 1
    w.advance_to(T0 + MIN)
    w.run()
    run = runs(w, staging)[0]
    assert run["status"] == "failed"
    assert "2 provider errors exceed errorThreshold 1" in run["message"]
    assert production_jobs(w) == []


def test_prometheus_queries_are_templated_and_judged_on_their_value(
    client: TestClient, clock: FakeClock, prometheus: PrometheusServer
) -> None:
    query = 'sum(rate(http_errors{host="s1",version="1.0.0"}[5m]))'
    prometheus.answer(query, 0.01, 0.02)
    templated = 'sum(rate(http_errors{host="{{resource.identifier}}",version="{{version.tag}}"}[5m]))'
    metric = {"name": "error-rate", "intervalSeconds": 60, "count": 2, "successCondition": "result.value < 0.05",
              "provider": {"type": "prometheus", "address": prometheus.url, "query": templated}}
    w = pipeline(client, clock, metric)
    deploy_staging(w, "1.0.0")
    measure(w, 2)
    run = run_detail(w, runs(w, w.target("api", "staging", "s1"))[0]["id"])
    assert [(m["status"], m["result"]["value"]) for m in run["measurements"]] == [("passed", 0.01), ("passed", 0.02)]
    assert run["status"] == "passed" and prometheus.queries() == [query, query]
    assert len(production_jobs(w)) == 1


@pytest.mark.parametrize(("answer", "message"), [
    (prometheus_error("parse error at char 5"),
     "the Prometheus query failed (HTTP 400): bad_data: parse error at char 5"),
    (Answer(body="<html>bad gateway</html>", status=502),
     "the Prometheus API answered HTTP 502 with a body that is not JSON"),
    (Answer(body={"status": "success", "data": {"resultType": "vector", "result": []}}),
     "successCondition could not be evaluated"),
])
def test_a_bad_prometheus_answer_is_a_provider_error(
    client: TestClient, clock: FakeClock, prometheus: PrometheusServer, answer: Answer, message: str
) -> None:
    prometheus.answer("up", answer)
    metric = {"name": "up", "count": 1, "successCondition": "result.value == 1.0",
              "provider": {"type": "prometheus", "address": prometheus.url, "query": "up"}}
    w = pipeline(client, clock, metric)
    deploy_staging(w, "1.0.0")
    w.run()
    w.run()
    run = run_detail(w, runs(w, w.target("api", "staging", "s1"))[0]["id"])
    (measurement,) = run["measurements"]
    assert measurement["status"] == "error" and measurement["message"].startswith(message)
    # One error is within the default errorThreshold (4), and nothing ever passed: a person decides.
    assert run["status"] == "inconclusive"


# ------------------------------------------------------------------------------------- rollback


def test_a_failed_run_with_rollback_queues_the_previous_good_version_and_production_never_sees_it(
    client: TestClient, clock: FakeClock, health: ScriptedServer
) -> None:
    health.script("/health", HEALTHY)
    w = pipeline(client, clock, http_metric(health.url + "/health", count=1), on_failure="rollback")
    v1 = deploy_staging(w, "1.0.0")
    w.run()
    w.run()  # v1 verified on staging, so production deploys it
    staging = w.target("api", "staging", "s1")
    w.finish(production_jobs(w)[0]["id"])
    assert w.jobs(staging)[0]["verification"] == "passed"

    health.script("/health", Answer(500, {"status": "down"}))
    w.advance_to(T0 + 10 * MIN)
    v2 = deploy_staging(w, "2.0.0")
    w.run()
    w.run()  # the run fails at its first measurement: a rollback to 1.0.0 is queued and, gates allowing, created
    (failed,) = [r for r in runs(w, staging) if r["versionId"] == v2["id"]]
    assert (failed["status"], failed["rollbackVersionId"]) == ("failed", v1["id"])
    rollback = [j for j in w.jobs(staging) if j["status"] == "pending"]
    assert [(j["versionId"], j["reason"], j["attempt"]) for j in rollback] == [(v1["id"], "rollback", 2)]
    audit = ok(client.get("/v1/audit", params={"limit": 1000}))["items"]
    (entry,) = [a for a in audit if a["action"] == "rollback"]
    assert (entry["actor"], entry["entityId"], entry["after"]["requestedVersionId"]) == (
        "verification", staging, v1["id"])
    assert f"verification run {failed['id']} failed" in entry["after"]["reason"]
    assert all(j["versionId"] == v1["id"] for j in production_jobs(w))

    w.advance_to(T0 + 15 * MIN)
    w.finish(rollback[0]["id"])
    w.run()
    w.advance_to(T0 + 60 * MIN)
    w.run()
    assert w.decision(staging)["currentVersion"]["tag"] == "1.0.0"
    # 2.0.0 succeeded here once: it is never redeployed automatically, and production never got it.
    assert [j["versionId"] for j in w.jobs(staging) if j["status"] == "pending"] == []
    assert all(j["versionId"] == v1["id"] for j in production_jobs(w))


# ------------------------------------------------------------------------------------- durability


def test_a_restart_mid_run_resumes_with_no_extra_or_missing_measurement(
    settings: Settings, clock: FakeClock, health: ScriptedServer
) -> None:
    health.script("/health", HEALTHY)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    first_store = Store.open(settings)
    with TestClient(create_app(settings, clock=clock, store=first_store, run_loop=False), headers=headers) as first:
        w = pipeline(first, clock, http_metric(health.url + "/health", count=4))
        deploy_staging(w, "1.0.0")
        staging = w.target("api", "staging", "s1")
        measure(w, 2)
        # Killed after claiming the third measurement, before recording it: the claim is durable, the I/O lost.
        w.advance_to(T0 + 2 * MIN)
        with first_store.transaction() as session:
            (claimed,) = claim_due(session, T0 + 2 * MIN, 10)
        assert claimed.owed == ((0, 2),)
    first_store.engine.dispose()

    second_store = Store.open(settings)
    with TestClient(create_app(settings, clock=clock, store=second_store, run_loop=False), headers=headers) as second:
        w.client, w.runner = second, as_token(second, "runner-2", "agent", w.agent)
        w.advance_to(T0 + 2 * MIN + 10 * SEC)
        assert w.run().measurements == 0  # the dead controller's lease has not lapsed yet
        w.advance_to(T0 + 3 * MIN)  # it has now (2 s timeout + 30 s margin)
        assert w.run().measurements == 1
        w.advance_to(T0 + 4 * MIN)
        assert w.run().measurements == 1
        w.advance_to(T0 + 10 * MIN)
        assert w.run().measurements == 0
        run = run_detail(w, runs(w, staging)[0]["id"])
        assert [(m["seq"], at(m["measuredAt"])) for m in run["measurements"]] == [
            (0, T0), (1, T0 + MIN), (2, T0 + 3 * MIN), (3, T0 + 4 * MIN)]
        assert run["status"] == "passed"
        assert len(health.hits("/health")) == 4  # the claimed-but-lost measurement was never taken on the wire
        assert len(production_jobs(w)) == 1
    second_store.engine.dispose()
