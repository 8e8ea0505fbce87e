"""The controller loop end to end through the API (SPEC §5–§6), on SQLite and on PostgreSQL.

Every test drives time explicitly: ``clock.advance(...)`` then ``run()`` (one ``loop.run_once()`` with
the app's clock). The world is one system with ``staging`` (resources tiered ``staging``) and
``production`` (tiered ``prod``), and a pull job agent ``runner`` with its own agent token.
T0 is Monday 2026-03-02 14:00Z.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from controller.clock import FakeClock
from controller.store.db import Store
from controller.store.reconciler import PassResult, Reconciler, claim_due
from tests.conftest import T0
from tests.integration.world import as_token, at, build, create, ok

SEC, MIN, HOUR = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)
LEASE = timedelta(seconds=60)  # Settings.job_lease_seconds
ONE_APPROVAL = {"anyApproval": {"minApprovals": 1}}
# Deny deploys 14:00-15:00 UTC every day: T0 is inside; T0 + 1h is outside.
DENY_14Z = {"deploymentWindow": {"rrule": "FREQ=DAILY;BYHOUR=14", "durationMinutes": 60, "allowWindow": False}}
PRODUCTION = "environment.name == 'production'"

# ------------------------------------------------------------------------------------- the happy path


def test_a_version_flows_from_staging_to_production_behind_an_approval_and_a_soak(
    client: TestClient, clock: FakeClock
) -> None:
    w = build(client, clock, {"s1": "staging", "p1": "prod", "p2": "prod"}, ["api"],
              config={"image": {"name": "api"}})
    w.policy("prod-gates", PRODUCTION, ONE_APPROVAL,
             {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.name == 'staging'",
                                         "minimumSoakTimeMinutes": 30}})
    alice = as_token(client, "alice", "approver")
    staging, prod = w.target("api", "staging", "s1"), [w.target("api", "production", p) for p in ("p1", "p2")]
    version = w.version("api", "1.0.0", config={"image": {"tag": "1.0.0"}})

    # T0: only staging is free of gates.
    assert w.run().jobs_created == 1
    [job] = w.jobs(status="pending")
    assert (job["releaseTargetId"], job["versionId"], job["attempt"]) == (staging, version["id"], 1)
    assert at(job["createdAt"]) == T0
    assert job["reason"] == "policy"
    assert w.decision(prod[0])["outcome"] == "wait"

    # T0+5m: the approval alone is not enough, staging has not succeeded yet.
    w.advance_to(T0 + 5 * MIN)
    ok(alice.post("/v1/approvals", json={"versionId": version["id"], "environmentId": w.env["production"]}), 201)
    assert w.run().jobs_created == 0

    # T0+20m: the agent claims (once) and succeeds; production waits for the soak until T0+50m exactly.
    w.advance_to(T0 + 20 * MIN)
    claimed = ok(w.runner.post(f"/v1/jobs/{job['id']}/claim"))
    assert claimed["status"] == "inProgress"
    assert claimed["config"] == {"image": {"registry": "registry.internal", "name": "api", "tag": "1.0.0"},
                                 "namespace": "default"}
    assert (claimed["environment"]["name"], claimed["resource"]["identifier"]) == ("staging", "s1")
    assert (claimed["deployment"]["slug"], claimed["version"]["tag"]) == ("api", "1.0.0")
    assert claimed["releaseTarget"]["id"] == staging
    assert at(claimed["leaseExpiresAt"]) == T0 + 20 * MIN + LEASE
    assert w.runner.post(f"/v1/jobs/{job['id']}/claim").status_code == 409
    done = ok(w.runner.patch(f"/v1/jobs/{job['id']}", json={"status": "successful", "message": "rolled out"}))
    assert (done["status"], at(done["completedAt"]), done["leaseExpiresAt"]) == ("successful", T0 + 20 * MIN, None)
    result = w.run()
    assert (result.jobs_created, result.next_wake_at) == (0, T0 + 50 * MIN)
    assert at(w.decision(prod[0])["eligibleAt"]) == T0 + 50 * MIN

    w.advance_to(T0 + 50 * MIN - SEC)
    assert w.run().jobs_created == 0
    w.advance_to(T0 + 50 * MIN)
    assert w.run().jobs_created == 2
    created = {j["releaseTargetId"]: at(j["createdAt"]) for j in w.jobs(status="pending")}
    assert created == dict.fromkeys(prod, T0 + 50 * MIN)  # max(approval T0+5m, success T0+20m + 30m soak)

    # Finished jobs cannot move back, nor take heartbeats; finished targets create nothing more.
    assert w.runner.patch(f"/v1/jobs/{job['id']}", json={"status": "inProgress"}).status_code == 409
    assert w.runner.post(f"/v1/jobs/{job['id']}/heartbeat").status_code == 409
    for pending in w.jobs(status="pending"):
        w.finish(pending["id"])
    assert w.run().jobs_created == 0
    assert {w.decision(t)["reason"] for t in [staging, *prod]} == {"UpToDate"}
    assert len(w.jobs()) == 3


# ------------------------------------------------------------------------------------- triggers


LABELS = text(
    "SELECT d.slug, e.name, r.identifier FROM release_target t"
    " JOIN deployment d ON d.id = t.deployment_id JOIN environment e ON e.id = t.environment_id"
    " JOIN resource r ON r.id = t.resource_id WHERE t.dirty_generation > t.evaluated_generation"
)


def dirty(store: Store) -> set[str]:
    with store.engine.connect() as connection:
        return {"/".join(row) for row in connection.execute(LABELS)}


def test_every_event_marks_exactly_the_targets_it_can_affect(
    client: TestClient, clock: FakeClock, store: Store
) -> None:
    # payments: api (with the agent) and worker, in staging (s1) and production (p1, p2). search: indexer,
    # in "other" (the prod-tier resources): it shares p1 and p2 with payments but nothing else.
    w = build(client, clock, {"s1": "staging", "p1": "prod", "p2": "prod"}, {"api": True, "worker": False})
    search = create(client, "/v1/systems", {"name": "search"})["id"]
    create(client, "/v1/environments", {"systemId": search, "name": "other",
                                        "resourceSelector": "resource.metadata.tier == 'prod'"})
    create(client, "/v1/deployments", {"systemId": search, "name": "indexer", "slug": "indexer"})
    alice = as_token(client, "alice", "approver")
    v1 = w.version("api", "1.0.0")
    w.run()
    assert dirty(store) == set()
    api = {"api/staging/s1", "api/production/p1", "api/production/p2"}
    api_prod = {"api/production/p1", "api/production/p2"}
    worker = {"worker/staging/s1", "worker/production/p1", "worker/production/p2"}
    worker_prod = {"worker/production/p1", "worker/production/p2"}
    on_p1 = {"api/production/p1", "worker/production/p1", "indexer/other/p1"}
    job_p1 = w.jobs(w.target("api", "production", "p1"))[0]["id"]
    overrides: dict[str, str] = {}

    def override(name: str, **scope: str) -> None:
        body = {"versionId": v1["id"], "reason": "incident 7", "expiresAt": (T0 + HOUR).isoformat(), **scope}
        overrides[name] = create(client, "/v1/overrides", body)["id"]

    events: list[tuple[str, Callable[[], Any], set[str]]] = [
        ("version created", lambda: w.version("api", "1.1.0"), api),
        ("version updated", lambda: ok(client.patch(f"/v1/versions/{v1['id']}", json={"message": "hotfix"})), api),
        ("version unchanged", lambda: ok(client.patch(f"/v1/versions/{v1['id']}", json={"message": "hotfix"})), set()),
        ("approval", lambda: ok(alice.post("/v1/approvals", json={
            "versionId": v1["id"], "environmentId": w.env["production"]}), 201), api_prod),
        ("approval replaced", lambda: ok(alice.post("/v1/approvals", json={
            "versionId": v1["id"], "environmentId": w.env["production"], "status": "rejected"}), 201), api_prod),
        ("job status", lambda: w.finish(job_p1, "failure"), api | on_p1),
        ("job message only", lambda: ok(w.runner.patch(f"/v1/jobs/{job_p1}", json={"message": "oom"})), set()),
        ("policy created", lambda: w.policy("p", PRODUCTION + " && deployment.slug == 'api'", ONE_APPROVAL), api_prod),
        ("policy moved", lambda: ok(client.patch("/v1/policies/p", json={
            "selector": PRODUCTION + " && deployment.slug == 'worker'"})), api_prod | worker_prod),
        ("policy disabled", lambda: ok(client.patch("/v1/policies/p", json={"enabled": False})), worker_prod),
        ("policy edited while disabled", lambda: ok(client.patch("/v1/policies/p", json={"priority": 5})), set()),
        ("policy enabled", lambda: ok(client.patch("/v1/policies/p", json={"enabled": True})), worker_prod),
        ("policy deleted", lambda: ok_empty(client.delete("/v1/policies/p")), worker_prod),
        ("resource policy", lambda: w.policy("r", "resource.identifier == 'p1'", ONE_APPROVAL), on_p1),
        ("override env", lambda: override("env", environmentId=w.env["production"]), api_prod),
        ("override resource", lambda: override("res", resourceId=w.res["p1"]), {"api/production/p1"}),
        ("override revoked", lambda: ok_empty(client.delete(f"/v1/overrides/{overrides['env']}")), api_prod),
        ("resource changed", lambda: ok(client.patch(f"/v1/resources/{w.res['p1']}",
                                                     json={"metadata": {"tier": "prod", "zone": "b"}})), on_p1),
        # Every target of the system's deployments: their progression selectors may read the environment.
        ("environment changed", lambda: ok(client.patch(f"/v1/environments/{w.env['production']}",
                                                        json={"description": "live"})), api | worker),
        # Its own targets, and other deployments' targets on its resources (deploymentDependency reads it).
        ("deployment changed", lambda: ok(client.patch(f"/v1/deployments/{w.dep['worker']}",
                                                       json={"description": "queue worker"})),
         api | worker | {"indexer/other/p1", "indexer/other/p2"}),
    ]
    for name, event, expected in events:
        event()
        assert dirty(store) == expected, name
        result = w.run()  # the next pass re-evaluates exactly those, and they are clean again
        assert (result.evaluated, dirty(store)) == (len(expected), set()), name

    # A resource that moves gets new targets, due at once, and so do their deployments' other targets.
    ok(client.patch(f"/v1/resources/{w.res['s1']}", json={"metadata": {"tier": "prod"}}))
    assert {"api/production/s1", "worker/production/s1", "indexer/other/s1"} <= dirty(store)
    assert w.run().jobs_created == 1  # api's new target deploys the newest version
    assert dirty(store) == set()


def ok_empty(response: Any) -> None:
    assert response.status_code == 204, response.text


def test_a_target_leaving_re_evaluates_the_progression_that_counted_it(client: TestClient, clock: FakeClock) -> None:
    w = build(client, clock, {"s1": "staging", "s2": "staging", "p1": "prod"}, ["api"])
    w.policy("prod", PRODUCTION,
             {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.name == 'staging'"}})
    w.version("api", "1.0.0")
    w.run()
    w.finish(w.jobs(w.target("api", "staging", "s1"))[0]["id"])
    w.finish(w.jobs(w.target("api", "staging", "s2"))[0]["id"], "failure")
    assert w.run().jobs_created == 0  # production needs both staging targets
    ok(client.patch(f"/v1/resources/{w.res['s2']}", json={"metadata": {"tier": "retired"}}))
    assert w.run().jobs_created == 1  # staging is now s1 alone, which succeeded


def test_an_environment_change_re_evaluates_the_progressions_that_read_it(client: TestClient, clock: FakeClock) -> None:
    w = build(client, clock, {"s1": "staging", "p1": "prod"}, ["api"])
    w.policy("prod", PRODUCTION,
             {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.metadata.stage == 'pre'"}})
    w.version("api", "1.0.0")
    w.run()
    w.finish(w.jobs(w.target("api", "staging", "s1"))[0]["id"])
    assert w.run().jobs_created == 0  # no environment is marked 'pre': production has no upstream, denied
    ok(client.patch(f"/v1/environments/{w.env['staging']}", json={"metadata": {"stage": "pre"}}))
    assert w.run().jobs_created == 1  # now staging is production's upstream, and it succeeded


# ------------------------------------------------------------------------------------- no lost triggers


def lock_waiters(store: Store) -> int:
    with store.engine.connect() as connection:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return int(connection.execute(text(query)).scalar_one())


def test_a_trigger_landing_during_an_evaluation_leaves_the_target_due(
    client: TestClient, clock: FakeClock, store: Store
) -> None:
    w = build(client, clock, {"p1": "prod"}, ["api"])
    w.policy("prod", PRODUCTION, ONE_APPROVAL)
    alice = as_token(client, "alice", "approver")
    version = w.version("api", "1.0.0")
    target = w.target("api", "production", "p1")
    w.run()
    ok(client.patch(f"/v1/environments/{w.env['production']}", json={"description": "live"}))  # dirty again
    postgres = store.engine.dialect.name == "postgresql"

    # A pass claims the target; while it evaluates, an approval (and its trigger) arrives on another connection.
    session = store.session()
    [claimed] = claim_due(session, T0, 500)
    generation = claimed.dirty_generation
    responses: list[int] = []
    body = {"versionId": version["id"], "environmentId": w.env["production"]}
    approver = threading.Thread(target=lambda: responses.append(alice.post("/v1/approvals", json=body).status_code))
    approver.start()
    if postgres:  # the trigger blocks on the claimed row until the pass commits
        deadline = time.monotonic() + 10
        while lock_waiters(store) == 0:
            assert time.monotonic() < deadline and approver.is_alive(), "the approval never waited for the pass"
            time.sleep(0.01)
    else:  # the pass holds SQLite's write lock: the approval waits for it
        approver.join(timeout=0.5)
        assert approver.is_alive()
    result = PassResult()
    Reconciler(store)._process(session, [claimed], T0, result)
    session.commit()
    session.close()
    approver.join()
    assert responses == [201]
    assert result.jobs_created == 0  # the pass could not see the approval ...

    with store.engine.connect() as connection:
        query = "SELECT dirty_generation, evaluated_generation FROM release_target WHERE id = :id"
        row = connection.execute(text(query), {"id": target}).one()
    assert tuple(row) == (generation + 1, generation)  # ... so it recorded the generation it read: still due
    assert w.run().jobs_created == 1
    assert len(w.jobs(target)) == 1


def test_concurrent_passes_never_create_a_job_twice(client: TestClient, clock: FakeClock, store: Store) -> None:
    w = build(client, clock, {f"p{i}": "prod" for i in range(6)}, ["api", "worker"])
    w.version("api", "1.0.0")
    w.version("worker", "1.0.0")
    barrier = threading.Barrier(3)
    results: list[PassResult | BaseException] = []

    def one_pass() -> None:
        barrier.wait()
        try:
            results.append(Reconciler(store, batch_size=4).run_pass(T0))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=one_pass) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, PassResult) for r in results), results
    assert sum(r.jobs_created for r in results if isinstance(r, PassResult)) == 12
    jobs = w.jobs()
    assert len(jobs) == len({j["releaseTargetId"] for j in jobs}) == 12
    assert {j["attempt"] for j in jobs} == {1}


# ------------------------------------------------------------------------------------- leases and retries


def test_lapsed_leases_are_lost_and_retried_only_by_a_retry_rule(client: TestClient, clock: FakeClock) -> None:
    w = build(client, clock, {"p1": "prod"}, ["api", "worker"])
    w.policy("retry-api", "deployment.slug == 'api'", {"retry": {"maxRetries": 1, "backoffSeconds": 30}})
    w.version("api", "1.0.0")
    w.version("worker", "1.0.0")
    api, worker = w.target("api", "production", "p1"), w.target("worker", "production", "p1")
    w.run()
    [api_job], [worker_job] = w.jobs(api), w.jobs(worker)
    for job in (api_job, worker_job):
        ok(w.runner.post(f"/v1/jobs/{job['id']}/claim"))
    assert w.run().next_wake_at == T0 + LEASE  # the loop wakes for the lease

    w.advance_to(T0 + 50 * SEC)  # only the worker's agent keeps beating
    beat = ok(w.runner.post(f"/v1/jobs/{worker_job['id']}/heartbeat"))
    assert at(beat["leaseExpiresAt"]) == T0 + 50 * SEC + LEASE
    w.advance_to(T0 + LEASE - SEC)
    assert w.run().leases_expired == 0
    w.advance_to(T0 + 61 * SEC)
    assert w.run().leases_expired == 1
    lost = ok(client.get(f"/v1/jobs/{api_job['id']}"))
    assert (lost["status"], at(lost["completedAt"])) == ("lost", T0 + 61 * SEC)
    assert "lease expired" in lost["message"]
    assert ok(client.get(f"/v1/jobs/{worker_job['id']}"))["status"] == "inProgress"
    assert w.runner.post(f"/v1/jobs/{api_job['id']}/heartbeat").status_code == 409
    assert w.runner.patch(f"/v1/jobs/{api_job['id']}", json={"status": "inProgress"}).status_code == 409
    assert at(w.decision(api)["eligibleAt"]) == T0 + 91 * SEC  # lost at T0+61s, backoff 30s

    w.advance_to(T0 + 90 * SEC)
    assert w.run().jobs_created == 0
    w.advance_to(T0 + 91 * SEC)
    assert w.run().jobs_created == 1
    retry = next(j for j in w.jobs(api) if j["id"] != api_job["id"])
    assert (retry["attempt"], retry["status"], at(retry["createdAt"])) == (2, "pending", T0 + 91 * SEC)

    # The worker's lease lapses too; without a retry rule nothing follows, however long we wait.
    w.advance_to(T0 + 111 * SEC)
    assert w.run().leases_expired == 1
    ok(w.runner.post(f"/v1/jobs/{retry['id']}/claim"))  # attempt 2 lapses as well: maxRetries is spent
    w.advance_to(T0 + 3 * HOUR)
    result = w.run()
    assert (result.leases_expired, result.jobs_created) == (1, 0)
    assert [j["status"] for j in w.jobs(worker)] == ["lost"]
    assert sorted(j["status"] for j in w.jobs(api)) == ["lost", "lost"]
    assert w.decision(worker)["reason"] == w.decision(api)["reason"] == "RetriesExhausted"


# ------------------------------------------------------------------------------------- agents and the gate


def gate(agent: TestClient, version: str, environment: str = "production", resource: str = "p1") -> Any:
    return agent.post("/v1/gate", json={"deployment": "web", "environment": environment, "resource": resource,
                                        "version": version})


def test_the_gate_answers_go_wait_and_no_go_for_the_callers_agent_only(client: TestClient, clock: FakeClock) -> None:
    # "web" has no job agent: its agents deploy themselves and ask first.
    w = build(client, clock, {"s1": "staging", "p1": "prod"}, {"web": False}, config={"image": {"name": "web"}})
    w.policy("prod", PRODUCTION, ONE_APPROVAL)
    w.policy("no-rc", "true", {"versionSelector": {"selector": "!version.tag.contains('-rc')",
                                                   "description": "release candidates never ship"}})
    version = w.version("web", "1.0.0", config={"image": {"tag": "1.0.0"}})
    candidate = w.version("web", "1.1.0-rc1")
    assert w.run().jobs_created == 0  # nothing for the loop to do without a job agent

    go = gate(w.runner, "1.0.0", "staging", "s1")
    body = ok(go)
    assert (body["outcome"], body["retryAfterSeconds"], "Retry-After" in go.headers) == ("go", None, False)
    job = body["job"]
    assert (job["status"], job["jobAgentId"], job["versionId"]) == ("inProgress", w.agent, version["id"])
    assert (job["attempt"], job["reason"]) == (1, "gate")
    assert (at(job["startedAt"]), at(job["leaseExpiresAt"])) == (T0, T0 + LEASE)
    assert job["config"] == {"image": {"registry": "registry.internal", "name": "web", "tag": "1.0.0"},
                             "namespace": "default"}
    assert (job["resource"]["identifier"], job["environment"]["name"], job["deployment"]["slug"],
            job["version"]["tag"]) == ("s1", "staging", "web", "1.0.0")
    assert job["releaseTarget"]["id"] == w.target("web", "staging", "s1")
    assert [j["id"] for j in w.jobs()] == [job["id"]]  # reported on like any job: it is the agent's

    again = gate(w.runner, version["id"], w.env["staging"], w.res["s1"])  # by id this time
    body = ok(again)
    assert (body["outcome"], body["reason"], body["job"]) == ("wait", "JobActive", None)
    assert body["retryAfterSeconds"] >= 1 and again.headers["Retry-After"] == str(body["retryAfterSeconds"])

    blocked = gate(w.runner, "1.0.0")
    body = ok(blocked)
    assert (body["outcome"], body["job"]) == ("wait", None)
    assert any(r.startswith("anyApproval: AwaitingApproval") for r in body["reasons"]), body["reasons"]
    assert blocked.headers["Retry-After"] == str(body["retryAfterSeconds"])

    denied = ok(gate(w.runner, candidate["tag"], "staging", "s1"))
    assert (denied["outcome"], denied["job"], denied["retryAfterSeconds"]) == ("no-go", None, None)
    assert any("release candidates never ship" in r for r in denied["reasons"]), denied["reasons"]
    assert gate(w.runner, "1.0.0", "staging", "nope").status_code == 404
    assert len(w.jobs()) == 1

    # Another agent's token reaches none of it.
    other_agent = create(client, "/v1/job-agents", {"name": "other"})["id"]
    intruder = as_token(client, "other", "agent", other_agent)
    path = f"/v1/jobs/{job['id']}"
    assert intruder.get(f"/v1/job-agents/{w.agent}/jobs").status_code == 403
    assert ok(intruder.get(f"/v1/job-agents/{other_agent}/jobs"))["items"] == []
    assert intruder.get(path).status_code == 403
    assert intruder.post(f"{path}/claim").status_code == 403
    assert intruder.post(f"{path}/heartbeat").status_code == 403
    assert intruder.patch(path, json={"status": "failure"}).status_code == 403
    assert intruder.post("/v1/systems", json={"name": "mine"}).status_code == 403
    assert ok(client.get(path))["status"] == "inProgress"  # nothing the intruder tried changed anything
    w.advance_to(T0 + 10 * SEC)
    assert at(ok(w.runner.post(f"{path}/heartbeat"))["leaseExpiresAt"]) == T0 + 10 * SEC + LEASE
    assert ok(w.runner.patch(path, json={"status": "successful"}))["status"] == "successful"


ROUNDS = 20


def test_two_concurrent_gate_calls_never_both_get_go(client: TestClient, clock: FakeClock) -> None:
    w = build(client, clock, {"p1": "prod"}, {"web": False})
    second = create(client, "/v1/job-agents", {"name": "runner-2"})["id"]
    agents = [w.runner, as_token(client, "runner-2", "agent", second)]
    target = w.target("web", "production", "p1")
    outcomes: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        clock.advance(SEC)  # each version strictly newer than the last
        tag = f"1.0.{round_}"
        w.version("web", tag)
        barrier = threading.Barrier(len(agents))
        responses: list[Any] = [None] * len(agents)

        def ask(index: int, tag: str = tag, barrier: threading.Barrier = barrier, out: list[Any] = responses) -> None:
            barrier.wait()
            out[index] = gate(agents[index], tag)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(agents))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answers = [ok(r) for r in responses]
        assert sorted(a["outcome"] for a in answers) == ["go", "wait"], (round_, answers)
        winner = next(i for i, a in enumerate(answers) if a["outcome"] == "go")
        outcomes.update(a["outcome"] for a in answers)
        ok(agents[winner].patch(f"/v1/jobs/{answers[winner]['job']['id']}", json={"status": "successful"}))
    assert outcomes == Counter({"go": ROUNDS, "wait": ROUNDS})
    jobs = ok(client.get(f"/v1/job-agents/{w.agent}/jobs", params={"limit": 1000}))["items"]
    jobs += ok(client.get(f"/v1/job-agents/{second}/jobs", params={"limit": 1000}))["items"]
    assert len(jobs) == ROUNDS and {j["releaseTargetId"] for j in jobs} == {target}
    assert len({j["versionId"] for j in jobs}) == ROUNDS


# ------------------------------------------------------------------------------------- redeploys


def test_redeploy_and_rollback_wait_for_the_gates_and_are_audited(client: TestClient, clock: FakeClock) -> None:
    w = build(client, clock, {"p1": "prod"}, ["api"])
    target = w.target("api", "production", "p1")
    old = w.version("api", "0.9.0", createdAt=(T0 - 9 * HOUR).isoformat())
    v1 = w.version("api", "1.0.0", createdAt=(T0 - 2 * HOUR).isoformat())
    w.run()  # 1.0.0 is the newest: 0.9.0 is never deployed
    w.advance_to(T0 + 5 * MIN)
    w.finish(w.jobs(target)[0]["id"])
    w.advance_to(T0 + 10 * MIN)
    v2 = w.version("api", "2.0.0")
    w.run()
    w.advance_to(T0 + 15 * MIN)
    w.finish(next(j for j in w.jobs(target) if j["versionId"] == v2["id"])["id"])
    assert w.run().jobs_created == 0
    w.policy("quiet-hour", "true", DENY_14Z)  # from now until T0+1h nothing deploys
    w.res["p2"] = create(client, "/v1/resources", {"identifier": "p2", "name": "p2", "kind": "k8s",
                                                    "metadata": {"tier": "prod"}})["id"]
    fresh = w.target("api", "production", "p2")
    w.advance_to(T0 + 20 * MIN)

    redeploy = f"/v1/release-targets/{target}/redeploy"
    never = client.post(redeploy, json={"version": "0.9.0", "reason": "never ran here"})
    assert never.status_code == 422 and "succeeded on this target" in never.text
    assert client.post(redeploy, json={"version": "9.9.9", "reason": "unknown"}).status_code == 404
    nothing = client.post(f"/v1/release-targets/{fresh}/redeploy", json={"reason": "nothing to redeploy"})
    assert nothing.status_code == 422
    assert client.post(redeploy, json={}).status_code == 422  # a reason is required

    # Redeploy the current version: accepted now, deployed once the deny window closes.
    decision = ok(client.post(redeploy, json={"reason": "config drift"}), 202)
    assert (decision["outcome"], decision["desiredVersion"]) == ("wait", None)
    assert w.run().jobs_created == 0
    w.advance_to(T0 + HOUR)
    assert w.run().jobs_created == 2  # the redeploy, and p2's first deploy
    again = next(j for j in w.jobs(target) if j["status"] == "pending")
    assert (again["versionId"], again["attempt"], again["reason"]) == (v2["id"], 2, "redeploy")
    assert at(again["createdAt"]) == T0 + HOUR
    w.advance_to(T0 + HOUR + 5 * MIN)
    w.finish(again["id"])
    assert w.run().jobs_created == 0  # fulfilled: not repeated

    # Roll back to 1.0.0, which succeeded here before; 2.0.0 is then not rolled forward automatically.
    w.advance_to(T0 + 2 * HOUR)
    ok(client.post(redeploy, json={"version": v1["id"], "reason": "2.0.0 leaks memory"}), 202)
    assert w.run().jobs_created == 1
    back = next(j for j in w.jobs(target) if j["status"] == "pending")
    assert (back["versionId"], back["attempt"], back["reason"]) == (v1["id"], 2, "rollback")
    w.advance_to(T0 + 2 * HOUR + 5 * MIN)
    w.finish(back["id"])
    assert w.run().jobs_created == 0
    explained = w.decision(target)
    assert explained["currentVersion"]["tag"] == "1.0.0" and explained["outcome"] == "no-go"
    assert old["id"] not in {j["versionId"] for j in w.jobs()}

    audit = ok(client.get("/v1/audit", params={"entityType": "releaseTarget", "entityId": target}))["items"]
    assert [(a["action"], a["actor"], a["after"]["requestedVersionId"], a["after"]["reason"]) for a in audit] == [
        ("redeploy", "admin", v2["id"], "config drift"),
        ("redeploy", "admin", v1["id"], "2.0.0 leaks memory"),
    ]


# ------------------------------------------------------------------------------------- decision log


def test_the_decision_log_records_changes_only_in_order_and_filters(client: TestClient, clock: FakeClock) -> None:
    w = build(client, clock, {"s1": "staging", "p1": "prod", "p2": "prod"}, ["api"])
    policy = w.policy("prod", PRODUCTION, ONE_APPROVAL)
    alice = as_token(client, "alice", "approver")
    version = w.version("api", "1.0.0")
    staging = w.target("api", "staging", "s1")
    p1, p2 = (w.target("api", "production", r) for r in ("p1", "p2"))

    def log(**params: str) -> list[tuple[str, str, str, datetime | None]]:
        items = ok(client.get("/v1/decisions", params={"limit": 1000, **params}))["items"]
        assert [i["seq"] for i in items] == sorted(i["seq"] for i in items)
        return [(i["releaseTargetId"], i["outcome"], i["reason"], at(i["evaluatedAt"])) for i in items]

    def stamp(instant: datetime) -> str:
        return instant.isoformat().replace("+00:00", "Z")

    assert w.run().decisions_logged == 3  # T0: staging go, production waits
    w.advance_to(T0 + MIN)
    ok(client.patch(f"/v1/environments/{w.env['production']}", json={"description": "live"}))
    result = w.run()
    # Every target of the system is re-evaluated (progression selectors may read the environment).
    # Production's decisions are unchanged, so not logged; staging's moved from go to JobActive since T0.
    assert (result.evaluated, result.decisions_logged) == (3, 1)
    assert log(releaseTargetId=staging)[-1][1:3] == ("wait", "JobActive")
    w.advance_to(T0 + 2 * MIN)
    ok(alice.post("/v1/approvals", json={"versionId": version["id"], "environmentId": w.env["production"]}), 201)
    assert w.run().decisions_logged == 2
    w.advance_to(T0 + 3 * MIN)
    w.finish(w.jobs(p1)[0]["id"])
    w.finish(w.jobs(staging)[0]["id"])
    assert w.run().decisions_logged == 3  # p1 and staging up to date; p2's job is still pending

    t0, t1, t2, t3 = T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN
    assert log(releaseTargetId=p1) == [(p1, "wait", "AwaitingGates", t0), (p1, "go", "Eligible", t2),
                                       (p1, "no-go", "UpToDate", t3)]
    assert log(releaseTargetId=p2) == [(p2, "wait", "AwaitingGates", t0), (p2, "go", "Eligible", t2),
                                       (p2, "wait", "JobActive", t3)]
    assert log(environmentId=w.env["staging"]) == [(staging, "go", "Eligible", t0), (staging, "wait", "JobActive", t1),
                                                   (staging, "no-go", "UpToDate", t3)]
    everything = log(deploymentId=w.dep["api"])
    assert len(everything) == 9 and log() == everything
    assert [e[3] for e in everything] == sorted(e[3] for e in everything)  # type: ignore[type-var]
    assert log(since=stamp(t2)) == [e for e in everything if e[3] in (t2, t3)]
    assert log(until=stamp(t2)) == [e for e in everything if e[3] in (t0, t1)]  # until is exclusive
    # One pass logs in target-id order: which of p1 and p2 comes first is not the point here.
    assert sorted(log(since=stamp(t2), until=stamp(t3), environmentId=w.env["production"])) == sorted([
        (p1, "go", "Eligible", t2), (p2, "go", "Eligible", t2)])
    assert log(deploymentId=w.dep["api"], environmentId=w.env["production"], releaseTargetId=staging) == []

    [entry] = [i for i in ok(client.get("/v1/decisions", params={"releaseTargetId": p1}))["items"]
               if i["outcome"] == "go"]
    assert entry["versionId"] == version["id"] and entry["policyRevisions"] == {policy["id"]: 1}
    assert entry["document"]["decisionId"] == entry["decisionId"]
    assert entry["document"]["desiredVersion"] == {"id": version["id"], "tag": "1.0.0"}
