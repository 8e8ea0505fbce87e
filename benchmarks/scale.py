"""Controller throughput with 1, 2 and 3 controller processes on one PostgreSQL database.

How many release targets per second the controllers reconcile when a new version dirties a whole
6,000-target deployment, and how that scales with processes sharing the work through ``FOR UPDATE
SKIP LOCKED``. The world is benchmarks/decide.py's (built through the store): one system, 20
environments (stage x region) of 300 resources each, the decided deployment (6,000 targets), an
upstream deployment on the Kubernetes clusters (~4,200 more targets, not dirtied by the version),
ten policies mixing every rule type, approvals, an override and ~12,000 jobs of history.

For each N in ``--processes``:

1. start N ``releasegate serve --role controller`` processes (loop tick 1 s, no periodic sweep);
2. wait until each has finished its first pass (a start-up sweep of every target) and every target
   is evaluated (``evaluated_generation >= dirty_generation``, read from the database);
3. create a new ready version through the store, which dirties the deployment's 6,000 targets, and
   poll the database (every 50 ms) until all of them are evaluated again;
4. stop the processes, and reject the version so that the next round decides the same candidates.

Printed per N: the time from the version's commit to the last target evaluated, targets per second
end to end and in steady state (from the first batch committed to the last: end to end includes
up to one loop tick before any controller notices, since a controller process learns of a write by
another process only at its next tick), the scaling ratio against one process, the controllers' and
PostgreSQL's CPU seconds (from /proc: on a shared machine, how many cores the round actually got is
what bounds the scaling) and how the targets were split between the processes (their /metrics).

    .venv/bin/python benchmarks/scale.py [--targets 6000] [--processes 1,2,3] [--batch-size N]
        [--database-url URL]

Without ``--database-url`` (or ``RELEASEGATE_DATABASE_URL``) it starts a throwaway PostgreSQL
cluster (tests/pgcluster.py) and removes it at the end. The machine's core count bounds the
scaling: the controllers, PostgreSQL and this poller share it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlmodel import select  # noqa: E402

from benchmarks.agents import Server, free_port, running  # noqa: E402
from benchmarks.decide import build_world  # noqa: E402
from controller.auth import SYSTEM  # noqa: E402
from controller.settings import Settings  # noqa: E402
from controller.store import inventory  # noqa: E402
from controller.store.db import Store  # noqa: E402
from controller.store.tables import DeploymentRow, DeploymentVersionRow  # noqa: E402
from tests.pgcluster import ThrowawayCluster  # noqa: E402

RELEASEGATE = Path(sys.executable).with_name("releasegate")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Round:
    processes: int
    seconds: float  # version committed -> every target evaluated
    steady_seconds: float  # first batch committed -> every target evaluated
    steady_targets: int  # targets evaluated in that span
    cpu_seconds: float  # the controllers' user + system time over the round
    pg_cpu_seconds: float | None  # PostgreSQL's (its server processes), when the cluster is ours
    split: list[int]  # targets each process evaluated

    def rate(self, targets: int) -> float:
        return targets / self.seconds

    def steady_rate(self) -> float:
        return self.steady_targets / self.steady_seconds if self.steady_seconds > 0 else float("nan")


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def pending(store: Store, deployment_id: str | None = None) -> int:
    where = "evaluated_generation < dirty_generation" + (" AND deployment_id = :d" if deployment_id else "")
    with store.engine.connect() as conn:
        count: int = conn.execute(text(f"SELECT count(*) FROM release_target WHERE {where}"),
                                  {"d": deployment_id}).scalar_one()
        return count


def metric(server: Server, name: str) -> float:
    exposition = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    sample = re.search(rf"^{re.escape(name)} (\S+)$", exposition, re.MULTILINE)
    if sample is None:
        raise RuntimeError(f"{server.name} exports no {name}")
    return float(sample.group(1))


def wait(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_SECONDS)


@contextmanager
def controllers(count: int, url: str, batch_size: int, workdir: Path, timeout: float) -> Iterator[list[Server]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")} | {
        "PYTHONUNBUFFERED": "1", "RELEASEGATE_DATABASE_URL": url, "RELEASEGATE_HOST": "127.0.0.1",
        "RELEASEGATE_LOOP_INTERVAL_SECONDS": "1", "RELEASEGATE_SWEEP_INTERVAL_SECONDS": str(24 * 3600),
        "RELEASEGATE_RECONCILE_BATCH_SIZE": str(batch_size),
    }
    with ExitStack() as stack:
        servers = [
            stack.enter_context(running(f"controller-{i}", [str(RELEASEGATE), "serve", "--role", "controller"],
                                        base | {"RELEASEGATE_PORT": str(free_port())},
                                        workdir / f"controller-{count}-{i}.log", timeout))
            for i in range(count)
        ]
        yield servers


def new_version(store: Store, deployment_id: str, tag: str) -> str:
    with store.transaction() as session:
        deployment = session.get(DeploymentRow, deployment_id)
        assert deployment is not None
        ctx = inventory.Context(session, SYSTEM, datetime.now(UTC))
        row = inventory.create_version(ctx, deployment, {
            "tag": tag, "created_by": "ci-bot", "metadata": {"pciReviewed": "true"}, "config": {}})
        return row.id


def reject(store: Store, version_id: str) -> None:
    with store.transaction() as session:
        row = session.exec(select(DeploymentVersionRow).where(DeploymentVersionRow.id == version_id)).one()
        inventory.update_version(inventory.Context(session, SYSTEM, datetime.now(UTC)), row, {"status": "rejected"})


def cpu(servers: list[Server]) -> float:
    return sum(server.cpu_seconds() for server in servers)


def pg_cpu(postmaster: int | None) -> float | None:
    """User + system seconds of the postmaster and its children (the backends serving the controllers)."""
    if postmaster is None:
        return None
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == postmaster or int(stat.parent.name) == postmaster:  # ppid, or the postmaster
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def measure(store: Store, deployment_id: str, targets: int, count: int, url: str, batch_size: int, workdir: Path,
            timeout: float, postmaster: int | None) -> Round:
    with controllers(count, url, batch_size, workdir, timeout) as servers:
        progress(f"{count} controller(s) up; waiting for their start-up sweeps")
        wait("every controller's first pass",
             lambda: all(metric(s, "releasegate_reconcile_pass_duration_seconds_count") >= 1 for s in servers), timeout)
        wait("every target evaluated", lambda: pending(store) == 0, timeout)
        evaluated = [metric(s, "releasegate_reconcile_targets_evaluated_total") for s in servers]
        cpu_before, pg_before = cpu(servers), pg_cpu(postmaster)
        version_id = new_version(store, deployment_id, f"v9.{count}.0")
        committed = time.perf_counter()
        first: tuple[float, int] | None = None
        while True:
            left = pending(store, deployment_id)
            now = time.perf_counter()
            if first is None and left < targets:
                first = (now, left)
            if left == 0:
                break
            if now - committed > timeout:
                raise RuntimeError(f"{left} targets still not evaluated after {timeout:.0f}s")
            time.sleep(POLL_SECONDS)
        done = time.perf_counter()
        cpu_used, pg_after = cpu(servers) - cpu_before, pg_cpu(postmaster)
        pg_used = pg_after - pg_before if pg_after is not None and pg_before is not None else None
        split = [int(metric(s, "releasegate_reconcile_targets_evaluated_total") - e)
                 for s, e in zip(servers, evaluated, strict=True)]
        failures = sum(metric(s, "releasegate_reconcile_pass_failures_total") for s in servers)
        if failures:
            progress(f"warning: {failures:.0f} failed passes (see {workdir})")
    reject(store, version_id)
    assert first is not None
    return Round(count, done - committed, done - first[0], first[1], cpu_used, pg_used, split)


@contextmanager
def database(url: str | None) -> Iterator[tuple[str, int | None]]:
    """The URL, and the postmaster's pid when the cluster is ours (to count its CPU time)."""
    if url:
        yield url, None
        return
    progress("starting a throwaway PostgreSQL cluster")
    cluster = ThrowawayCluster().start()
    try:
        postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        yield cluster.fresh_database("rg_scale"), postmaster
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=6000, help="release targets of the dirtied deployment")
    parser.add_argument("--processes", default="1,2,3", help="controller process counts to measure, in order")
    parser.add_argument("--batch-size", type=int, default=Settings().reconcile_batch_size,
                        help="RELEASEGATE_RECONCILE_BATCH_SIZE (default: the product's)")
    parser.add_argument("--database-url", default=os.environ.get("RELEASEGATE_DATABASE_URL"),
                        help="a PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on every wait")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    targets = max(20, args.targets // 20 * 20)
    with database(args.database_url) as (url, postmaster), tempfile.TemporaryDirectory(prefix="rg-bench-") as tmp:
        store = Store.open(Settings(database_url=url))
        progress(f"building the world ({targets} targets in the measured deployment)")
        started = time.perf_counter()
        world = build_world(store, targets)
        built = time.perf_counter() - started
        total = pending(store)
        rounds = []
        for count in counts:
            rounds.append(measure(store, world.deployment_id, targets, count, url, args.batch_size, Path(tmp),
                                  args.timeout, postmaster))
            progress(f"{count} process(es): {rounds[-1].seconds:.2f} s")
        store.engine.dispose()

    print(f"\nPostgreSQL, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; world built in {built:.0f} s "
          f"({total} release targets, {targets} in the measured deployment); batch size {args.batch_size}, loop tick "
          "1 s")
    print(f"\n{'controllers':>11}  {'all evaluated':>13}  {'targets/s':>9}  {'vs 1':>5}  {'steady/s':>8}  {'vs 1':>5}  "
          f"{'ctl CPU':>8}  {'ms/target':>9}  {'PG CPU':>7}  {'cores':>5}  split between processes")
    base = rounds[0]
    for r in rounds:
        rate, steady = r.rate(targets), r.steady_rate()
        pg = f"{r.pg_cpu_seconds:>5.1f} s" if r.pg_cpu_seconds is not None else f"{'n/a':>7}"
        cores = (r.cpu_seconds + (r.pg_cpu_seconds or 0.0)) / r.seconds
        print(f"{r.processes:>11}  {r.seconds:>11.2f} s  {rate:>9.0f}  {rate / base.rate(targets):>4.2f}x"
              f"  {steady:>8.0f}  {steady / base.steady_rate():>4.2f}x  {r.cpu_seconds:>6.1f} s"
              f"  {r.cpu_seconds / targets * 1000:>9.1f}  {pg}  {cores:>5.2f}  {' + '.join(map(str, r.split))}")
    print("\n'all evaluated': from the version's commit until every target's evaluated_generation caught up; it "
          "includes up to one loop tick before a controller notices. 'steady': from the first batch committed to the "
          f"last. 'vs 1': against {base.processes} process(es). 'ctl CPU': the controller processes' user + system "
          "time, and per target; 'PG CPU': PostgreSQL's (when the cluster is ours); 'cores': both over the wall time, "
          "the CPU the round actually got (on a shared machine, fewer than the processes could use).")


if __name__ == "__main__":
    main()
