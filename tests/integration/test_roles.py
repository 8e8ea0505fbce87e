"""Process roles, the migrate setting and metrics, in-process, on SQLite and PostgreSQL.

A ``controller`` app serves probes and metrics only; an ``api`` app runs no loop and does not report
one; with ``migrate=false`` a process checks the schema instead of migrating it; the metrics count what
a pass and a gate call actually did. The shipped processes are tested in ``tests/e2e/test_deploy.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlmodel import SQLModel

from api.app import create_app
from controller.clock import FakeClock
from controller.settings import ProcessRole, Settings
from controller.store.db import SchemaNotCurrent, Store, alembic_config
from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextmanager
def app_client(settings: Settings, store: Store, clock: FakeClock, role: ProcessRole) -> Iterator[TestClient]:
    app = create_app(replace(settings, role=role), clock=clock, store=store, run_loop=False)
    with TestClient(app, headers=AUTH) as client:
        yield client


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def one_target_with_a_version(client: TestClient) -> dict[str, Any]:
    """One resource in one environment of one deployment with a pull agent, and a ready version."""
    agent = created(client.post("/v1/job-agents", json={"name": "runner"}))
    system = created(client.post("/v1/systems", json={"name": "shop"}))
    created(client.post("/v1/environments", json={"systemId": system["id"], "name": "production",
                                                  "resourceSelector": "resource.kind == 'k8s'"}))
    deployment = created(client.post("/v1/deployments", json={"systemId": system["id"], "name": "API",
                                                               "slug": "api", "jobAgentId": agent["id"]}))
    created(client.post("/v1/resources", json={"identifier": "k8s-1", "name": "k8s-1", "kind": "k8s"}))
    created(client.post(f"/v1/deployments/{deployment['id']}/versions", json={"tag": "1.0.0"}))
    return agent


def test_a_controller_app_serves_probes_and_metrics_only(settings: Settings, store: Store, clock: FakeClock) -> None:
    with app_client(settings, store, clock, ProcessRole.CONTROLLER) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200
        for path in ("/v1/systems", "/v1/release-targets", "/docs", "/openapi.json", "/redoc"):
            assert client.get(path).status_code == 404, path
        assert client.post("/v1/gate", json={}).status_code == 404
        assert client.app.state.loop is not None  # type: ignore[attr-defined]
        readiness = client.get("/readyz").json()
        assert readiness["role"] == "controller"
        assert set(readiness["checks"]) == {"database", "controller"}


def test_a_controller_whose_passes_keep_failing_is_not_ready(settings: Settings, store: Store,
                                                            clock: FakeClock) -> None:
    # A real fault: a table every pass reads is gone, while the database itself still answers.
    trigger_table = SQLModel.metadata.tables["deployment_trigger"]
    with app_client(settings, store, clock, ProcessRole.CONTROLLER) as client:
        loop = client.app.state.loop  # type: ignore[attr-defined]
        loop.start()
        try:
            loop.run_once()
            assert client.get("/readyz").status_code == 200
            trigger_table.drop(store.engine)
            for failed in range(1, 4):
                assert loop.run_once() is None
                assert loop.failing >= failed
            readiness = client.get("/readyz")
            assert readiness.status_code == 503, readiness.text
            assert readiness.json()["checks"]["database"] == "ok"
            assert readiness.json()["checks"]["controller"].startswith("failing: the last ")
            trigger_table.create(store.engine)
            assert loop.run_once() is not None
            assert (loop.failing, client.get("/readyz").status_code) == (0, 200)
        finally:
            loop.stop()


def test_an_api_app_runs_no_loop_and_is_ready_without_one(settings: Settings, store: Store, clock: FakeClock) -> None:
    with app_client(settings, store, clock, ProcessRole.API) as client:
        assert client.app.state.loop is None  # type: ignore[attr-defined]
        readiness = client.get("/readyz")
        assert readiness.status_code == 200, readiness.text
        assert readiness.json() == {"status": "ok", "role": "api", "checks": {"database": "ok"}}
        created(client.post("/v1/systems", json={"name": "written-by-an-api-process"}))
        found = samples(client)
        assert value(found, "releasegate_info", role="api", version="0.1.0") == 1
        assert not any(name == "releasegate_jobs" for name, _ in found)  # the controllers export that


def test_metrics_count_what_a_pass_and_a_gate_call_did(settings: Settings, store: Store, clock: FakeClock) -> None:
    with app_client(settings, store, clock, ProcessRole.ALL) as client:
        agent = one_target_with_a_version(client)
        before = samples(client)
        assert value(before, "releasegate_jobs", status="pending") == 0
        assert value(before, "releasegate_decisions_total", outcome="go") == 0

        result = client.app.state.loop.run_once()  # type: ignore[attr-defined]
        assert (result.evaluated, result.jobs_created, result.logged_outcomes) == (1, 1, ["go"])
        after = samples(client)
        assert value(after, "releasegate_reconcile_pass_duration_seconds_count") == 1
        assert value(after, "releasegate_reconcile_due_targets") == 1
        assert value(after, "releasegate_reconcile_targets_evaluated_total") == 1
        assert value(after, "releasegate_reconcile_jobs_created_total") == 1
        assert value(after, "releasegate_decisions_total", outcome="go") == 1
        assert value(after, "releasegate_decisions_total", outcome="wait") == 0
        assert value(after, "releasegate_jobs", status="pending") == 1
        assert value(after, "releasegate_jobs", status="successful") == 0

        # Nothing changed: the next pass evaluates nothing and logs no decision.
        client.app.state.loop.run_once()  # type: ignore[attr-defined]
        again = samples(client)
        assert value(again, "releasegate_reconcile_pass_duration_seconds_count") == 2
        assert value(again, "releasegate_reconcile_due_targets") == 0
        assert value(again, "releasegate_decisions_total", outcome="go") == 1

        gate = client.post("/v1/gate", json={"deployment": "api", "environment": "production",
                                              "resource": "k8s-1", "version": "1.0.0"})
        assert gate.status_code == 200, gate.text
        answered = gate.json()["outcome"]
        gated = samples(client)
        assert value(gated, "releasegate_gate_request_duration_seconds_count", outcome=answered) == 1
        assert sum(value(gated, "releasegate_gate_request_duration_seconds_count", outcome=o) or 0
                   for o in ("go", "wait", "no-go")) == 1
        jobs = client.get(f"/v1/job-agents/{agent['id']}/jobs").json()["items"]
        assert len(jobs) == (2 if answered == "go" else 1)


def test_each_app_has_its_own_registry(settings: Settings, store: Store, clock: FakeClock) -> None:
    """Two apps in one process: no duplicate-registration error, and one's counts are not the other's."""
    with app_client(settings, store, clock, ProcessRole.ALL) as first, \
            app_client(settings, store, clock, ProcessRole.CONTROLLER) as second:
        first.app.state.loop.run_once()  # type: ignore[attr-defined]
        assert value(samples(first), "releasegate_reconcile_pass_duration_seconds_count") == 1
        assert value(samples(second), "releasegate_reconcile_pass_duration_seconds_count") == 0


def stamp(store: Store, revision: str) -> None:
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_without_migrate_a_process_only_checks_the_schema(settings: Settings, store: Store) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    newest_first = [r.revision for r in script.walk_revisions()]
    assert len(newest_first) >= 2
    checking = replace(settings, migrate=False)
    Store.open(checking).engine.dispose()  # the schema is current: it starts

    stamp(store, newest_first[-1])  # as if only the first migration had run
    with pytest.raises(SchemaNotCurrent) as raised:
        Store.open(checking)
    missing = ", ".join(reversed(newest_first[:-1]))
    assert str(raised.value).startswith(f"the database lacks migrations {missing}; run `releasegate migrate` first")

    stamp(store, "9999_from_a_newer_release")  # a rolling upgrade: the job ran, this replica is the older
    Store.open(checking).engine.dispose()
