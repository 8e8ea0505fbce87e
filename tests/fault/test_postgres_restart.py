"""PostgreSQL goes away mid-run and comes back: every process reconnects and the run completes.

Why it exists: a database restart (a failover, an upgrade, a crash) breaks every pooled connection
of every process at once. The promise (SPEC §6, §8) is that nothing is lost or duplicated, requests
meanwhile get a clear 503 rather than a 500, and no process needs restarting afterwards. Here 2 API
and 2 controller processes drive a 40-target pipeline on a private cluster (``restartable_cluster``:
the rest of the suite's cluster is never disturbed), which is stopped in immediate mode (a crash)
while jobs are being reported, and started again on the same port.

What it must not do: restart any releasegate process, or sleep for recovery: it waits, with
deadlines, on what the processes report (``/readyz``, ``/metrics``) and on the database.
"""

from __future__ import annotations

from tests.e2e.conftest import ServerProcess, ok, wait_for
from tests.fault.conftest import Database, Fleet, MakeFleet
from tests.fault.pipeline import (
    assert_pipeline_consistent,
    build_pipeline,
    create_version,
    describe,
    is_unavailable,
    jobs,
    settled,
    workers,
)
from tests.pgcluster import ThrowawayCluster

STAGING = PRODUCTION = 20
TIMEOUT = 90.0
ENV = {
    "RELEASEGATE_SWEEP_INTERVAL_SECONDS": str(24 * 3600),  # recovery may not lean on the safety net
    "RELEASEGATE_LOOP_INTERVAL_SECONDS": "1",
    # A claim whose answer is lost to the outage leaves a job nobody reports: it is lost after 5 s and
    # retried (the pipeline's retry rule), rather than holding its target for the default minute.
    "RELEASEGATE_JOB_LEASE_SECONDS": "5",
}


def ready(process: ServerProcess) -> bool:
    return process.client.get("/readyz").status_code == 200


def test_postgres_restarting_mid_run_is_survived_without_restarting_anything(
    restartable_cluster: ThrowawayCluster, restartable_database: str, fleets: MakeFleet
) -> None:
    fleet = fleets(restartable_database, ENV)
    apis = [fleet.api(f"api-{i}") for i in range(2)]
    controllers = [fleet.controller(f"controller-{i}") for i in range(2)]
    pipeline = build_pipeline(apis[0].client, staging=STAGING, production=PRODUCTION, rollout_seconds=3, retries=3)
    db = Database(restartable_database)
    try:
        with workers([api.base_url for api in apis], pipeline) as worked:
            create_version(apis[1].client, pipeline, "1.0.0")

            def staging_half_done() -> bool:
                done = sum(j.status == "successful" for j in jobs(db, pipeline))
                return STAGING // 4 <= done < STAGING

            wait_for("staging to be under way", staging_half_done, TIMEOUT, pause=0.05)
            restartable_cluster.halt()
            try:
                # Meanwhile: a write is a well-formed 503, readiness says why, and every controller's
                # pass fails (they are still trying, not dead).
                outage = apis[0].client.post("/v1/systems", json={"name": "during-outage"})
                assert is_unavailable(outage), f"{outage.status_code} {outage.text}"
                for process in apis + controllers:
                    probe = process.client.get("/readyz")
                    assert probe.status_code == 503 and probe.json()["checks"]["database"] != "ok", probe.text
                failures = {c.pid: Fleet.metric(c, "releasegate_reconcile_pass_failures_total") for c in controllers}
                wait_for("every controller to fail a pass", lambda: all(
                    Fleet.metric(c, "releasegate_reconcile_pass_failures_total") > failures[c.pid]
                    for c in controllers), TIMEOUT)
            finally:
                restartable_cluster.resume()

            for process in apis + controllers:
                wait_for(f"{process.log_path.name} to reconnect", lambda p=process: ready(p), TIMEOUT)
            ok(apis[0].client.post("/v1/systems", json={"name": "during-outage"}), 201)
            wait_for("every target on 1.0.0", lambda: settled(db, pipeline, pipeline.expect("1.0.0")), TIMEOUT,
                     state=lambda: describe(db, pipeline))

        lost = sum(j.status == "lost" for j in jobs(db, pipeline))
        print(f"during the outage: {worked.answers['unavailable']} well-formed 503s to the workers; {lost} jobs lost "
              "(a claim or report that the outage cut) and deployed again")
        assert all(process.returncode is None for process in apis + controllers), "a process died"
        assert_pipeline_consistent(db, pipeline, "1.0.0")
        assert worked.errors == [], worked.errors
        assert len(ok(apis[1].client.get("/v1/systems", params={"limit": 1000}))["items"]) == 2  # shop, during-outage
    finally:
        db.close()
