"""A staging → production pipeline driven over HTTP, and the invariants every run of it must keep.

Why it exists: the controller-kill and PostgreSQL-restart tests break different things under the
same workload, and must come out of it the same way: every target on the expected version, one
successful job per (target, version), every job preceded by a logged ``go``, production never ahead
of staging. Keeping the workload and the checks here makes both tests assert exactly the same.

What it must not do: write to the database. The world is built through the API; ``JobWorker``
does what a pull agent does (list, claim, report); the checks only read.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from tests.e2e.conftest import ok
from tests.fault.conftest import Database

Doc = dict[str, Any]
REQUEST_TIMEOUT = 60.0  # generous: the machine is shared and the servers are under load


def is_unavailable(response: httpx.Response) -> bool:
    """The product's answer when the database is gone: 503, a JSON body saying so, and Retry-After."""
    if response.status_code != 503 or "retry-after" not in response.headers:
        return False
    try:
        problems = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(problems) and all(p.get("type") == "unavailable" for p in problems)


@dataclass(frozen=True)
class Pipeline:
    agent_id: str
    agent_token: str
    deployment_id: str
    environments: dict[str, str]  # name -> id
    environment_of: dict[str, str]  # release target id -> environment name

    def expect(self, tag: str, *environments: str) -> dict[str, str]:
        """Every target of ``environments`` (default: all) on ``tag``, the others on nothing yet."""
        return {t: tag for t, env in self.environment_of.items() if not environments or env in environments}


def build_pipeline(admin: httpx.Client, *, staging: int, production: int, rollout_seconds: int,
                   staging_rollout_seconds: int = 0, approval: bool = False, retries: int = 0) -> Pipeline:
    """One deployment with a pull job agent over ``staging`` + ``production`` VMs. Production
    waits for every staging target to succeed with the same version (environmentProgression), then
    rolls out over ``rollout_seconds`` (gradualRollout, linear-normalized): a time-held gate, so
    the controllers' durable ``nextEvaluationAt`` is exercised too. With ``staging_rollout_seconds``,
    staging rolls out the same way (so it lasts at least that long). With ``approval``, production
    also waits for one approval. With ``retries``, a lost job is retried (a job whose claim's answer
    was lost to an outage expires, and is deployed again)."""
    agent = ok(admin.post("/v1/job-agents", json={"name": "deployer"}), 201)
    token = ok(admin.post("/v1/tokens", json={"name": "deployer", "role": "agent", "jobAgentId": agent["id"]}), 201)
    system = ok(admin.post("/v1/systems", json={"name": "shop"}), 201)
    for name in ("staging", "production"):
        ok(admin.post("/v1/environments", json={
            "systemId": system["id"], "name": name, "resourceSelector": f"resource.metadata.tier == '{name}'"}), 201)
    deployment = ok(admin.post("/v1/deployments", json={
        "systemId": system["id"], "name": "API", "slug": "api", "jobAgentId": agent["id"],
        "resourceSelector": "resource.kind == 'vm'"}), 201)
    resources = [{"identifier": f"{tier}-{i:03d}", "name": f"{tier} {i}", "kind": "vm", "metadata": {"tier": tier}}
                 for tier, count in (("staging", staging), ("production", production)) for i in range(count)]
    ok(admin.put("/v1/resources", json=resources))
    rules: list[Doc] = [
        {"environmentProgression": {"dependsOnEnvironmentSelector": "environment.name == 'staging'"}},
        {"gradualRollout": {"rolloutType": "linear-normalized", "timeScaleInterval": rollout_seconds}},
        *([{"anyApproval": {"minApprovals": 1}}] if approval else []),
    ]
    ok(admin.post("/v1/policies", json={
        "name": "production-after-staging", "selector": "environment.name == 'production'", "rules": rules}), 201)
    if staging_rollout_seconds:
        ok(admin.post("/v1/policies", json={
            "name": "staging-rollout", "selector": "environment.name == 'staging'",
            "rules": [{"gradualRollout": {"rolloutType": "linear-normalized",
                                          "timeScaleInterval": staging_rollout_seconds}}]}), 201)
    if retries:
        ok(admin.post("/v1/policies", json={
            "name": "retry-lost", "selector": "true",
            "rules": [{"retry": {"maxRetries": retries, "retryOnStatuses": ["lost"]}}]}), 201)
    environments = {e["id"]: e["name"] for e in ok(admin.get("/v1/environments", params={"limit": 1000}))["items"]}
    targets = ok(admin.get("/v1/release-targets", params={"deploymentId": deployment["id"], "limit": 1000}))["items"]
    assert len(targets) == staging + production
    return Pipeline(agent["id"], token["token"], deployment["id"], {name: i for i, name in environments.items()},
                    {t["id"]: environments[t["environmentId"]] for t in targets})


def create_version(admin: httpx.Client, pipeline: Pipeline, tag: str) -> Doc:
    version: Doc = ok(admin.post(f"/v1/deployments/{pipeline.deployment_id}/versions", json={"tag": tag}), 201)
    return version


@dataclass
class WorkerLog:
    claims: Counter[str] = field(default_factory=Counter)  # job id -> successful claims
    answers: Counter[str] = field(default_factory=Counter)  # "conflict" (409 on a claim), "unavailable" (503)
    errors: list[str] = field(default_factory=list)  # anything else: fails the test
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, counter: Counter[str], key: str) -> None:
        with self.lock:
            counter[key] += 1


class JobWorker(threading.Thread):
    """A pull agent in a thread: list pending jobs, claim one, report it successful at once.

    A 503 is retried after a pause (it must be the well-formed one); any other unexpected answer is
    recorded as an error. A report that meets 409 found its job lost (the lease lapsed while the
    database was away): the retry rule owns it from there."""

    def __init__(self, base_url: str, pipeline: Pipeline, log: WorkerLog, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {pipeline.agent_token}"},
                                   timeout=REQUEST_TIMEOUT)
        self.pipeline, self.record, self.stopping = pipeline, log, stop

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if not self._drain():
                    self.stopping.wait(0.1)
        except Exception as exc:
            self.record.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.client.close()

    def _answer(self, response: httpx.Response, *expected: int) -> bool:
        if response.status_code in expected:
            return True
        if is_unavailable(response):
            self.record.count(self.record.answers, "unavailable")
            self.stopping.wait(0.3)
        else:
            self.record.errors.append(f"{response.request.method} {response.request.url.path}: "
                                      f"{response.status_code} {response.text[:300]}")
        return False

    def _drain(self) -> bool:
        """One listing's worth of work; whether there was any."""
        listing = self.client.get(f"/v1/job-agents/{self.pipeline.agent_id}/jobs",
                                  params={"status": "pending", "limit": 50})
        if not self._answer(listing, 200):
            return False
        jobs = listing.json()["items"]
        for job in jobs:
            claim = self.client.post(f"/v1/jobs/{job['id']}/claim")
            if claim.status_code == 409:
                self.record.count(self.record.answers, "conflict")
                continue
            if self._answer(claim, 200):
                self.record.count(self.record.claims, job["id"])
                self._report(job["id"])
        return bool(jobs)

    def _report(self, job_id: str) -> None:
        while not self.stopping.is_set():
            report = self.client.patch(f"/v1/jobs/{job_id}", json={"status": "successful"})
            if report.status_code == 409 or self._answer(report, 200):
                return


@contextmanager
def workers(base_urls: Sequence[str], pipeline: Pipeline, per_server: int = 1) -> Iterator[WorkerLog]:
    """``per_server`` JobWorkers against each server, sharing one log; stopped on exit."""
    log, stop = WorkerLog(), threading.Event()
    threads = [JobWorker(url, pipeline, log, stop) for url in base_urls for _ in range(per_server)]
    for thread in threads:
        thread.start()
    try:
        yield log
    finally:
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT)


# -- reading the outcome -----------------------------------------------------------------------------

ACTIVE = ("pending", "inProgress", "actionRequired")


def jobs(db: Database, pipeline: Pipeline) -> list[Any]:
    return db.rows(
        "SELECT j.id, j.release_target_id, v.tag, j.version_id, j.attempt, j.status, j.reason, j.created_at, "
        "j.completed_at FROM job j JOIN deployment_version v ON v.id = j.version_id "
        "WHERE v.deployment_id = :deployment", deployment=pipeline.deployment_id)


def current_versions(db: Database, pipeline: Pipeline) -> dict[str, str]:
    """Each target's current version (SPEC §1): the version of its latest successful job, by completedAt."""
    latest: dict[str, tuple[datetime, str]] = {}
    for job in jobs(db, pipeline):
        if job.status == "successful" and (job.release_target_id not in latest
                                           or job.completed_at > latest[job.release_target_id][0]):
            latest[job.release_target_id] = (job.completed_at, job.tag)
    return {target: tag for target, (_, tag) in latest.items()}


def settled(db: Database, pipeline: Pipeline, expected: dict[str, str]) -> bool:
    """Current versions exactly as ``expected`` (``Pipeline.expect``), no job active, no target dirty."""
    if any(job.status in ACTIVE for job in jobs(db, pipeline)):
        return False
    if current_versions(db, pipeline) != expected:
        return False
    dirty: int = db.scalar("SELECT count(*) FROM release_target WHERE dirty_generation <> evaluated_generation")
    return dirty == 0


def describe(db: Database, pipeline: Pipeline) -> str:
    """A summary for a failure message: jobs by environment and status, dirty targets, the latest
    decision of a few production targets that are not on the newest version."""
    counts = Counter((pipeline.environment_of[j.release_target_id], j.tag, j.status) for j in jobs(db, pipeline))
    dirty = db.scalar("SELECT count(*) FROM release_target WHERE dirty_generation <> evaluated_generation")
    current = current_versions(db, pipeline)
    behind = [t for t, env in pipeline.environment_of.items() if env == "production" and t not in current][:3]
    latest = [db.rows("SELECT outcome, reason, evaluated_at, t.next_evaluation_at, t.dirty_generation, "
                      "t.evaluated_generation FROM decision_log d JOIN release_target t ON t.id = d.release_target_id "
                      "WHERE d.release_target_id = :t ORDER BY seq DESC LIMIT 1", t=target) for target in behind]
    return f"jobs {dict(counts)}; {dirty} dirty targets; latest decisions of targets behind: {latest}"


def assert_pipeline_consistent(db: Database, pipeline: Pipeline, tag: str) -> None:
    """Everything a run must satisfy once settled on ``tag``, whatever broke along the way."""
    all_jobs = jobs(db, pipeline)
    assert current_versions(db, pipeline) == dict.fromkeys(pipeline.environment_of, tag)

    # No duplicate: one job per (target, version, attempt), one success per (target, version), and
    # any further attempt follows a job that was lost (the only status the pipelines retry).
    assert max(Counter((j.release_target_id, j.version_id, j.attempt) for j in all_jobs).values()) == 1
    by_release: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for job in all_jobs:
        by_release[job.release_target_id, job.version_id].append(job)
    for (target, _), attempts in by_release.items():
        statuses = [j.status for j in sorted(attempts, key=lambda j: j.attempt)]
        assert statuses[-1] == "successful" and set(statuses[:-1]) <= {"lost"}, (target, statuses)
        assert [j.attempt for j in sorted(attempts, key=lambda j: j.attempt)] == list(range(1, len(attempts) + 1))

    # The decision log: only known targets and versions, in time order per target, and a `go` for
    # each job's (target, version) logged no later than the job was created.
    decisions = db.rows("SELECT seq, release_target_id, version_id, outcome, evaluated_at FROM decision_log "
                        "WHERE deployment_id = :deployment ORDER BY seq", deployment=pipeline.deployment_id)
    versions = {row.id for row in db.rows("SELECT id FROM deployment_version")}
    unknown = [d.seq for d in decisions if d.release_target_id not in pipeline.environment_of
               or (d.version_id is not None and d.version_id not in versions)]
    assert not unknown, f"decisions naming an unknown target or version: {unknown}"
    orphans = db.scalar("SELECT count(*) FROM decision_log d WHERE NOT EXISTS "
                        "(SELECT 1 FROM release_target t WHERE t.id = d.release_target_id)")
    assert orphans == 0
    last_at: dict[str, tuple[int, datetime]] = {}
    first_go: dict[tuple[str, str], datetime] = {}
    for d in decisions:
        if d.release_target_id in last_at:
            seq, at = last_at[d.release_target_id]
            assert d.evaluated_at >= at, f"decision {d.seq} of {d.release_target_id} is older than decision {seq}"
        last_at[d.release_target_id] = (d.seq, d.evaluated_at)
        if d.outcome == "go":
            first_go.setdefault((d.release_target_id, d.version_id), d.evaluated_at)
    for job in all_jobs:
        go_at = first_go.get((job.release_target_id, job.version_id))
        assert go_at is not None and go_at <= job.created_at, f"job {job.id} has no `go` logged before it"

    # Gates held: production got a version only after every staging target had succeeded with it.
    for version_id in {j.version_id for j in all_jobs}:
        of_version = [j for j in all_jobs if j.version_id == version_id]
        staged = [j.completed_at for j in of_version
                  if j.status == "successful" and pipeline.environment_of[j.release_target_id] == "staging"]
        assert len(staged) == sum(1 for e in pipeline.environment_of.values() if e == "staging")
        early = [j.id for j in of_version
                 if pipeline.environment_of[j.release_target_id] == "production" and j.created_at < max(staged)]
        assert not early, f"production jobs created before staging finished: {early}"


def duplicates_caught(logs: dict[str, str]) -> list[str]:
    """Lines where the reconciler's unique-constraint fallback caught a duplicate job: it exists as a
    last line of defence and must never be needed (row locks keep two processes off one target)."""
    return [f"{name}: {line}" for name, log in logs.items() for line in log.splitlines()
            if "job already exists" in line]
