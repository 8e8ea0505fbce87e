"""Release-target derivation at scale: from scratch, one resource change, one selector change.

Builds 15,000 resources, 20 environments and 50 deployments (benchmarks/world.py) in a real
database through the same store code the API uses, and times:

- deriving every release target from scratch (bulk upsert of all resources into a live inventory);
- applying one resource change (metadata edit that moves the resource between environments);
- applying one environment selector change.

The baseline, measured in the same run, is the naive approach: every selector re-evaluated over
every resource with celpy, no memo, no incremental scoping (what any change costs without them).
It is also checked to produce exactly the same target set.

    .venv/bin/python benchmarks/targets.py [--resources 15000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlmodel import func, select

from benchmarks import world
from controller.auth import SYSTEM
from controller.cel import Doc, Program
from controller.clock import SystemClock
from controller.settings import Settings
from controller.store import inventory
from controller.store.db import Store
from controller.store.documents import resource_doc
from controller.store.tables import DeploymentRow, EnvironmentRow, ReleaseTargetRow, ResourceRow
from controller.targets import RESOURCE_VARIABLES

clock = SystemClock()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def write(store: Store, fn: Callable[[inventory.Context], Any]) -> Any:
    with store.transaction() as session:
        return fn(inventory.Context(session, SYSTEM, clock.now()))


def build_scopes(store: Store) -> dict[str, Any]:
    ids: dict[str, Any] = {"systems": {}, "environments": [], "deployments": []}
    for name in world.SYSTEMS:
        ids["systems"][name] = write(store, lambda c, n=name: inventory.create_system(c, {"name": n})).id
    for env in world.environments():
        fields = {"system_id": ids["systems"][env["system"]], "name": env["name"],
                  "resource_selector": env["resourceSelector"]}
        ids["environments"].append(write(store, lambda c, f=fields: inventory.create_environment(c, f)).id)
    for dep in world.deployments():
        fields = {"system_id": ids["systems"][dep["system"]], "name": dep["name"], "slug": dep["slug"],
                  "resource_selector": dep["resourceSelector"]}
        ids["deployments"].append(write(store, lambda c, f=fields: inventory.create_deployment(c, f)).id)
    return ids


def naive_derivation(store: Store) -> set[tuple[str, str, str]]:
    """Every selector over every resource: fresh activations, unmemoised programs, no scoping."""
    with store.session() as session:
        resources = [resource_doc(row) for row in session.exec(select(ResourceRow))]
        envs = [(r.id, r.system_id, r.resource_selector) for r in session.exec(select(EnvironmentRow))]
        deps = [(r.id, r.system_id, r.resource_selector) for r in session.exec(select(DeploymentRow))]
    compiled = {src: Program(src, RESOURCE_VARIABLES, memo=False) for _, _, src in envs + deps if src}
    found = set()
    for data in resources:
        activation = {"resource": Doc(data)}
        env_hits = [(e, s) for e, s, src in envs if src and compiled[src].test(activation)]
        dep_hits = [(d, s) for d, s, src in deps if not src or compiled[src].test(activation)]
        found |= {(data["id"], e, d) for e, es in env_hits for d, ds in dep_hits if es == ds}
    return found


def stored_targets(store: Store) -> set[tuple[str, str, str]]:
    with store.session() as session:
        stmt = select(ReleaseTargetRow.resource_id, ReleaseTargetRow.environment_id, ReleaseTargetRow.deployment_id)
        return {tuple(row) for row in session.exec(stmt)}  # type: ignore[misc]


def resource_changes(store: Store, items: list[dict[str, Any]], count: int) -> list[float]:
    durations = []
    for i in range(count):
        item = items[(i * 7919) % len(items)]
        meta = dict(item["metadata"], tier=world.TIERS[(world.TIERS.index(item["metadata"]["tier"]) + 1 + i) % 4])
        item["metadata"] = meta

        def change(c: inventory.Context, ident: str = item["identifier"], m: dict[str, str] = meta) -> None:
            row = c.session.exec(select(ResourceRow).where(ResourceRow.identifier == ident)).one()
            inventory.update_resource(c, row, {"metadata": m})

        durations.append(timed(lambda: write(store, change))[0])
    return durations


def selector_changes(store: Store, env_ids: list[str], count: int) -> list[float]:
    durations = []
    for i in range(count):
        selector = ["resource.metadata.tier == 'prod'", "resource.metadata.region.startsWith('eu')",
                    "resource.kind == 'vm' && resource.metadata.tier in ['dev', 'qa']"][i % 3]

        def change(c: inventory.Context, env_id: str = env_ids[i % len(env_ids)], s: str = selector) -> None:
            row = c.session.get(EnvironmentRow, env_id)
            assert row is not None
            inventory.update_environment(c, row, {"resource_selector": s})

        durations.append(timed(lambda: write(store, change))[0])
    return durations


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=15_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{tmp.name}/bench.db"
    store = Store.open(Settings(database_url=url))
    ids = build_scopes(store)
    items = world.resources(args.resources)

    scratch, _ = timed(lambda: write(store, lambda c: inventory.upsert_resources(c, items)))
    with store.session() as session:
        total = session.exec(select(func.count()).select_from(ReleaseTargetRow)).one()
    naive, naive_set = timed(lambda: naive_derivation(store))
    assert naive_set == stored_targets(store), "incremental derivation disagrees with the naive baseline"

    one_resource = resource_changes(store, items, 50)
    one_selector = selector_changes(store, ids["environments"], 6)
    assert naive_derivation(store) == stored_targets(store), "targets drifted after incremental changes"

    print(f"backend: {url.split(':')[0]}; {args.resources} resources, {len(ids['environments'])} environments, "
          f"{len(ids['deployments'])} deployments -> {total} release targets")
    print(f"naive baseline (every selector over every resource):       {ms(naive)}")
    print(f"derive all from scratch (bulk upsert, incl. DB writes):     {ms(scratch)}   {naive / scratch:8.1f}x faster")
    med, worst = statistics.median(one_resource), max(one_resource)
    print(f"one resource change (median of 50; max {ms(worst).strip()}):     {ms(med)}   {naive / med:8.1f}x faster")
    med = statistics.median(one_selector)
    print(f"one environment selector change (median of 6; max {ms(max(one_selector)).strip()}): {ms(med)}   "
          f"{naive / med:8.1f}x faster")
    store.engine.dispose()


if __name__ == "__main__":
    main()
