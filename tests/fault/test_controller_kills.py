"""Controllers SIGKILLed at random while 200 targets move staging → production (SPEC §6).

Why it exists: the promise is that a crash loses nothing and repeats nothing, and that several
controller processes on one PostgreSQL database never create two jobs for one (target, version,
attempt). Here 2 API and 3 controller processes (``releasegate serve --role api|controller``) run a
real pipeline while a seeded schedule SIGKILLs controllers, preferably while they are inside a
transaction (holding row locks, half a batch written).

Two phases, because a starting controller sweeps every target once (its first pass), which would
mend a lost trigger and hide it:

1. staging: version 1.0.0 rolls out to the 100 staging targets over 12 s while a random controller
   is killed every 1.5–3.5 s and started again in the background (the others may die meanwhile), at
   least three times. Production waits for an approval.
2. production: once every live controller has finished its first pass, the approval is given, and
   the 100 production targets roll out over 10 s while two of the three controllers are killed at
   random moments and never restarted. No process starts, and the sweep interval is a
   day: every target reaches 1.0.0 only if every trigger (the approval, each job's completion, the
   rollout's timed wake-ups) was kept. An idle canary deployment proves that no sweep ran.

What it must not do: wait on a fixed sleep for anything the product decides; it polls the
database with deadlines. The kill schedule is seeded (``SEED``); only its timing varies.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.e2e.conftest import ServerProcess, ok, wait_for
from tests.fault.conftest import Database, Fleet, MakeFleet
from tests.fault.pipeline import (
    Pipeline,
    assert_pipeline_consistent,
    build_pipeline,
    create_version,
    describe,
    duplicates_caught,
    jobs,
    settled,
    workers,
)

SEED = 6  # issue #6
STAGING = PRODUCTION = 100
STAGING_ROLLOUT_SECONDS = 12  # staging spreads over 12 s of timed wake-ups: time for the kills to land
ROLLOUT_SECONDS = 10  # production over 10 s: the second phase's two kills land within it
SETTLE_TIMEOUT = 120.0
ENV = {
    "RELEASEGATE_SWEEP_INTERVAL_SECONDS": str(24 * 3600),  # no periodic safety net during the test
    "RELEASEGATE_LOOP_INTERVAL_SECONDS": "1",
    "RELEASEGATE_RECONCILE_BATCH_SIZE": "25",  # 8 batches per pass: kills land between and inside them
}


@dataclass
class Kill:
    name: str
    in_transaction: bool
    at: datetime


@dataclass
class Chaos:
    """Kills controllers on a seeded schedule, never the last live one. ``slots`` holds each name's
    live, ready process, or None while it is dead (or, with ``restart``, starting again in the
    background)."""

    fleet: Fleet
    db: Database
    slots: dict[str, ServerProcess | None]
    rng: random.Random
    restart: bool
    max_kills: int
    gap: tuple[float, float]
    kills: list[Kill] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    starters: list[threading.Thread] = field(default_factory=list)

    def run(self) -> None:
        try:
            while len(self.kills) < self.max_kills and not self.stopping.wait(self.rng.uniform(*self.gap)):
                alive = sorted(name for name, process in self.slots.items() if process is not None)
                if len(alive) <= 1:
                    continue  # one live controller is spared: it keeps the run moving (and in phase 2 finishes it)
                self._kill(self.rng.choice(alive))
        except BaseException as exc:
            self.errors.append(exc)

    def _kill(self, name: str) -> None:
        victim = self.slots[name]
        assert victim is not None
        # Aim at a transaction in flight (row locks held, a batch half written); after a second without
        # one, kill anyway: an idle controller may die too.
        busy = self.db.wait_busy(name, timeout=1.0)
        self.fleet.kill(victim)
        self.kills.append(Kill(name, busy, datetime.now(UTC)))
        self.slots[name] = None
        if self.restart:
            starter = threading.Thread(target=self._start, args=(name,), daemon=True)
            self.starters.append(starter)
            starter.start()

    def _start(self, name: str) -> None:
        try:
            self.slots[name] = self.fleet.controller(name)
        except BaseException as exc:
            self.errors.append(exc)


@contextmanager
def chaos(fleet: Fleet, db: Database, slots: dict[str, ServerProcess | None], rng: random.Random, *,
          restart: bool, max_kills: int, gap: tuple[float, float]) -> Iterator[Chaos]:
    """Run a ``Chaos`` schedule for the duration of the block; on exit, every restart has finished."""
    schedule = Chaos(fleet, db, slots, rng, restart, max_kills, gap)
    thread = threading.Thread(target=schedule.run, daemon=True)
    thread.start()
    try:
        yield schedule
    finally:
        schedule.stopping.set()
        thread.join(60)
        for starter in schedule.starters:
            starter.join(60)
    if schedule.errors:
        raise schedule.errors[0]


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def version_id(db: Database, tag: str) -> str:
    found: str = db.scalar("SELECT id FROM deployment_version WHERE tag = :tag", tag=tag)
    return found


def canary_generation(db: Database, canary: str) -> int:
    generation: int = db.scalar("SELECT dirty_generation FROM release_target WHERE deployment_id = :d", d=canary)
    return generation


def add_canary(admin: Any, pipeline: Pipeline) -> str:
    """An idle deployment on a resource of its own: no version, job or policy ever touches its target,
    so its dirty generation moves only when a controller sweeps every target."""
    system = ok(admin.get("/v1/systems/shop"))
    agent = pipeline.agent_id
    canary = ok(admin.post("/v1/deployments", json={
        "systemId": system["id"], "name": "Canary", "slug": "canary", "jobAgentId": agent,
        "resourceSelector": "resource.kind == 'canary'"}), 201)
    ok(admin.put("/v1/resources", json=[
        {"identifier": "canary", "name": "canary", "kind": "canary", "metadata": {"tier": "staging"}}]))
    deployment_id: str = canary["id"]
    return deployment_id


def test_controllers_killed_at_random_lose_no_trigger_and_create_no_duplicate(
    pg_database: str, fleets: MakeFleet
) -> None:
    fleet = fleets(pg_database, ENV)
    apis = [fleet.api(f"api-{i}") for i in range(2)]
    slots: dict[str, ServerProcess | None] = {f"controller-{i}": fleet.controller(f"controller-{i}") for i in range(3)}
    pipeline = build_pipeline(apis[0].client, staging=STAGING, production=PRODUCTION, rollout_seconds=ROLLOUT_SECONDS,
                              staging_rollout_seconds=STAGING_ROLLOUT_SECONDS, approval=True)
    canary = add_canary(apis[0].client, pipeline)
    # Not the admin who creates the version: an author's own approval does not count.
    approver = apis[1].new_client(ok(apis[0].client.post("/v1/tokens", json={"name": "alice", "role": "approver"}),
                                     201)["token"])
    db = Database(pg_database)
    rng = random.Random(SEED)
    try:
        # Three pull agents per API server: job reports race each other (each marks the whole
        # deployment), as well as the controllers.
        with workers([api.base_url for api in apis], pipeline, per_server=3) as worked:
            progress("world built; version 1.0.0")
            create_version(apis[1].client, pipeline, "1.0.0")
            with chaos(fleet, db, slots, rng, restart=True, max_kills=1000, gap=(1.5, 3.5)) as first:
                staged = pipeline.expect("1.0.0", "staging")
                wait_for("staging on 1.0.0, after at least 3 kills",
                         lambda: len(first.kills) >= 3 and settled(db, pipeline, staged), SETTLE_TIMEOUT,
                         state=lambda: describe(db, pipeline))
            # Every live controller has swept (its first pass is over) before the second phase starts.
            live = [process for process in slots.values() if process is not None]
            wait_for("every controller's first pass", lambda: all(fleet.passes(p) >= 1 for p in live), 60)
            swept = canary_generation(db, canary)
            progress("staging settled; production approved")
            approval = ok(approver.post("/v1/approvals", json={
                "versionId": version_id(db, "1.0.0"), "environmentId": pipeline.environments["production"],
                "status": "approved"}), 201)
            with chaos(fleet, db, slots, rng, restart=False, max_kills=2, gap=(0.5, 2.5)) as second:
                everything = pipeline.expect("1.0.0")
                wait_for("every target on 1.0.0, after 2 kills",
                         lambda: len(second.kills) == 2 and settled(db, pipeline, everything), SETTLE_TIMEOUT,
                         state=lambda: describe(db, pipeline))
            assert canary_generation(db, canary) == swept, "a sweep ran in the second phase: it proves nothing"
            progress("production settled")

        kills = first.kills + second.kills
        print(f"kills (seed {SEED}): " + ", ".join(f"{k.name}{'*' if k.in_transaction else ''}" for k in kills)
              + "  (* = inside a transaction)")
        assert any(kill.in_transaction for kill in kills), "no kill landed inside a transaction"
        # The second phase's kills came while production was still rolling out: the survivor finished it.
        last_job_at = max(j.created_at for j in jobs(db, pipeline)).astimezone(UTC)
        assert all(kill.at < last_job_at for kill in second.kills), (second.kills, last_job_at)

        assert_pipeline_consistent(db, pipeline, "1.0.0")
        approved_at = datetime.fromisoformat(approval["createdAt"])
        early = [j.id for j in jobs(db, pipeline) if pipeline.environment_of[j.release_target_id] == "production"
                 and j.created_at.astimezone(UTC) < approved_at]
        assert not early, f"production jobs created before the approval: {early}"
        assert worked.errors == [], worked.errors
        assert worked.answers["unavailable"] == 0
        assert set(worked.claims.values()) == {1}, "a job was claimed twice"
        assert len(worked.claims) == STAGING + PRODUCTION, "every job was claimed by a worker"
        assert duplicates_caught(fleet.logs("controller")) == []
    finally:
        approver.close()
        db.close()
