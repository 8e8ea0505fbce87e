"""Agents against the real server: gate calls and job claims over loopback, next to a bare endpoint.

Runs ``releasegate serve`` as a subprocess on a temporary SQLite file, and a bare FastAPI app (one
sync ``POST`` endpoint that validates the same four-field body and answers a small JSON) served by
uvicorn the same way (a subprocess, the same logging setup, access log on). Then, with one
``httpx.Client`` per caller thread (keep-alive, loopback):

A. gate only: ``--gate-callers`` callers each ask ``POST /v1/gate`` ``--gate-calls`` times, over
   ``--gate-targets`` production targets of a deployment gated by a policy (an approval, given,
   and a version selector). The first ask per target answers ``go`` (a job is created), the later
   ones ``wait`` (that job is active): both paths are measured.
B. mixed: ``--pull-agents`` pull agents (list pending → claim → report successful) drain
   ``--jobs`` pending jobs that the controller loop created for a new version, while the gate
   callers ask about a new version and report each ``go`` successful, as real agents would.
C. the bare endpoint, with the gate-only load of A.
D. the floor of our own stack: the same callers list their agent's pending jobs (authentication,
   a session, one indexed query that finds nothing). No gate call can cost less than this.

For each it prints throughput, p50/p99 latency and the server's CPU time per request (read from
/proc; on a shared machine it moves least), and the gate/bare ratios. The goal from the issue:
gate throughput ≥ 30 % of the bare endpoint, and gate p99 < 50 ms at 50 concurrent callers.
``--profile`` then runs the gate in-process (``create_app`` on a copy of the same database,
``TestClient``, one caller) under cProfile and prints the top costs.

    .venv/bin/python benchmarks/agents.py [--gate-callers 50] [--gate-calls 20] [--pull-agents 8]
        [--jobs 300] [--gate-targets 500] [--profile]

Every count is bounded and every wait has a deadline; nothing runs longer than ``--timeout``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import gate_world  # noqa: E402 - needs the path above
from benchmarks.gate_world import ok  # noqa: E402

RELEASEGATE = Path(sys.executable).with_name("releasegate")
ADMIN_TOKEN = "rg_bench-admin-token-0123456789abcdef"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Generous: a starved request is measured (it shows in p99), not dropped.
REQUEST_TIMEOUT = 180.0

# The bare app: the same framework, server, logging and body validation; no database, no logic.
BARE_APP = r"""
import sys
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from controller import logs

class GateRequest(BaseModel):
    deployment: str
    environment: str
    resource: str
    version: str

app = FastAPI()

@app.post("/v1/gate")
def gate(body: GateRequest) -> dict[str, object]:
    return {"outcome": "go", "reason": "Eligible", "resource": body.resource}

@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ok"}

logs.configure("INFO")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info", log_config=None)
"""


# -- processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running(name: str, argv: Sequence[str], env: dict[str, str], log: Path, timeout: float) -> Iterator[Server]:
    port = int(env.get("RELEASEGATE_PORT") or argv[-1])
    with log.open("wb") as sink:
        process = subprocess.Popen(list(argv), env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(name, process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in {timeout:.0f}s")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def releasegate(workdir: Path, timeout: float, batch_size: int | None) -> Any:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELEASEGATE_")} | {
        "RELEASEGATE_DATABASE_URL": f"sqlite:///{workdir / 'releasegate.db'}",
        "RELEASEGATE_PORT": str(port),
        "RELEASEGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        # Long leases: a slow phase must not turn its own gate jobs into lost ones.
        "RELEASEGATE_JOB_LEASE_SECONDS": "3600",
        "PYTHONUNBUFFERED": "1",
    } | ({"RELEASEGATE_RECONCILE_BATCH_SIZE": str(batch_size)} if batch_size else {})
    return running("releasegate", [str(RELEASEGATE), "serve"], env, workdir / "server.log", timeout)


def bare(workdir: Path, timeout: float) -> Any:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return running("bare", [sys.executable, "-c", BARE_APP, str(port)], env, workdir / "bare.log", timeout)


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Series:
    """Latencies (seconds) and outcomes of one kind of request, collected from many threads."""

    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, outcome: str) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.outcomes[outcome] += 1

    def fail(self, what: str) -> None:
        """A request that is part of the flow but not the measured one (a report, a listing) failed."""
        with self.lock:
            self.failures[what] += 1

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def timed(series: Series, call: Callable[[], httpx.Response], outcome: Callable[[httpx.Response], str]) -> Any:
    start = time.perf_counter()
    response = call()
    series.add(time.perf_counter() - start, outcome(response))
    return response


def in_threads(count: int, work: Callable[[int], None], timeout: float) -> float:
    """Run ``work(i)`` in ``count`` threads released together; the wall time until all finished."""
    errors: list[Exception] = []
    barrier = threading.Barrier(count + 1)

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except Exception as exc:  # noqa: BLE001 - reported below: a failed caller must not look like a fast one
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise RuntimeError(f"callers still running after {timeout:.0f}s")
    if errors:
        raise RuntimeError(f"{len(errors)} callers failed; first: {errors[0]!r}")
    return time.perf_counter() - start


@dataclass
class Phase:
    name: str
    series: Series
    seconds: float
    cpu: float

    @property
    def throughput(self) -> float:
        return len(self.series.latencies) / self.seconds

    def line(self) -> str:
        s = self.series
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted((s.outcomes + s.failures).items()))
        return (f"  {self.name:<34} {len(s.latencies):>5} req  {self.throughput:>8.1f} req/s  "
                f"p50 {s.quantile(0.5) * 1000:>7.1f} ms  p99 {s.quantile(0.99) * 1000:>7.1f} ms  "
                f"server CPU {self.cpu / max(1, len(s.latencies)) * 1000:>6.2f} ms/req  ({outcomes})")


# -- the world -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    gate_token: str
    pull_token: str
    gate_resources: list[str]
    pull_deployment: str
    gate_deployment: str
    production: str


def build(admin: httpx.Client, gate_targets: int, jobs: int) -> World:
    """Two deployments in one production environment (benchmarks/gate_world.py): ``gated`` on
    ``gate_targets`` VMs, and ``pulled`` (job agent ``pullers``) on ``jobs`` clusters; ``gated``'s
    1.0.0 needs one approval, which it has."""
    base = gate_world.build(admin, gate_targets, jobs)
    approver = ok(admin.post("/v1/tokens", json={"name": "alice", "role": "approver"}), 201)
    gated, production = base.gated, base.production
    ok(admin.post("/v1/policies", json={
        "name": "production", "selector": "environment.name == 'production'",
        "rules": [{"anyApproval": {"minApprovals": 1}},
                  {"versionSelector": {"selector": "!version.tag.startsWith('0.')", "description": "no 0.x"}}],
    }), 201)
    version = ok(admin.post(f"/v1/deployments/{gated['id']}/versions", json={"tag": "1.0.0"}), 201)
    with httpx.Client(base_url=str(admin.base_url), headers={"Authorization": f"Bearer {approver['token']}"},
                      timeout=120) as alice:
        ok(alice.post("/v1/approvals", json={"versionId": version["id"], "environmentId": production["id"],
                                             "status": "approved"}), 201)
    return World(base.gate_token, base.pull_token, base.vms, base.pulled["id"], gated["id"], production["id"])


def approve(admin: httpx.Client, world: World, deployment: str, tag: str) -> None:
    version = ok(admin.post(f"/v1/deployments/{deployment}/versions", json={"tag": tag}), 201)
    token = ok(admin.post("/v1/tokens", json={"name": f"approver-{tag}-{deployment[:8]}", "role": "approver"}), 201)
    with httpx.Client(base_url=str(admin.base_url), headers={"Authorization": f"Bearer {token['token']}"},
                      timeout=120) as alice:
        ok(alice.post("/v1/approvals", json={"versionId": version["id"], "environmentId": world.production,
                                             "status": "approved"}), 201)


# -- load ------------------------------------------------------------------------------------------


def client_for(base_url: str, token: str) -> httpx.Client:
    """One keep-alive connection per caller thread."""
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT)


def gate_load(base_url: str, token: str, resources: list[str], tag: str, callers: int, calls: int,
              timeout: float, *, report: bool = False) -> tuple[Series, float]:
    """Each caller asks about its share of ``resources``; with ``report``, a `go` is reported
    successful. A failed request is counted (its status code is its outcome), never retried."""
    series = Series()

    def caller(i: int) -> None:
        with client_for(base_url, token) as client:
            for k in range(calls):
                resource = resources[(i + k * callers) % len(resources)]
                body = {"deployment": "gated", "environment": "production", "resource": resource, "version": tag}
                answer = timed(series, lambda b=body: client.post("/v1/gate", json=b),
                               lambda r: r.json()["outcome"] if r.status_code == 200 else f"HTTP {r.status_code}")
                job = answer.json().get("job") if answer.status_code == 200 else None
                if report and job is not None:
                    reported = client.patch(f"/v1/jobs/{job['id']}", json={"status": "successful"})
                    if reported.status_code != 200:
                        series.fail(f"report HTTP {reported.status_code}")

    return series, in_threads(callers, caller, timeout)


PENDING_ONE = {"status": "pending", "limit": 1}


def read_load(base_url: str, token: str, callers: int, calls: int, timeout: float) -> tuple[Series, float]:
    """The cheapest authenticated call an agent makes, the gate's floor: token lookup, one session,
    one indexed query that finds nothing (the gate callers' jobs are never pending)."""
    series = Series()

    def caller(_: int) -> None:
        with client_for(base_url, token) as client:
            for _ in range(calls):
                timed(series, lambda: client.get("/v1/job-agents/gaters/jobs", params=PENDING_ONE),
                      lambda r: f"HTTP {r.status_code}")

    return series, in_threads(callers, caller, timeout)


def pull_load(base_url: str, token: str, agents: int, jobs: int, timeout: float) -> tuple[Series, float]:
    """Pull agents drain the pending jobs: list, claim (a 409 means another agent won it), report.
    A job counts as handled once claimed, whatever became of its report (failures are counted)."""
    claims = Series()
    handled = Counter[str]()
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def agent(_: int) -> None:
        with client_for(base_url, token) as client:
            while time.monotonic() < deadline:
                with lock:
                    if handled["claimed"] >= jobs:
                        return
                pending = client.get("/v1/job-agents/pullers/jobs", params={"status": "pending", "limit": 20})
                items = pending.json()["items"] if pending.status_code == 200 else []
                if pending.status_code != 200:
                    claims.fail(f"list HTTP {pending.status_code}")
                if not items:
                    time.sleep(0.05)  # the loop is still creating them
                    continue
                for item in items:
                    claimed = timed(claims, lambda i=item: client.post(f"/v1/jobs/{i['id']}/claim"),
                                    lambda r: f"HTTP {r.status_code}")
                    if claimed.status_code != 200:
                        continue  # 409: another agent won it
                    with lock:
                        handled["claimed"] += 1
                    reported = client.patch(f"/v1/jobs/{item['id']}", json={"status": "successful"})
                    if reported.status_code != 200:
                        claims.fail(f"report HTTP {reported.status_code}")
                    break

    seconds = in_threads(agents, agent, timeout)
    if handled["claimed"] < jobs:
        raise RuntimeError(f"only {handled['claimed']} of {jobs} jobs were claimed in {timeout:.0f}s")
    return claims, seconds


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def measured(server: Any, name: str, load: Callable[[], tuple[Series, float]]) -> Phase:
    progress(name)
    cpu = server.cpu_seconds()
    series, seconds = load()
    return Phase(name, series, seconds, server.cpu_seconds() - cpu)


# -- profile ---------------------------------------------------------------------------------------


def profile_gate(database: Path, world: World, resources: list[str]) -> None:
    """The gate path in-process (``create_app`` + ``TestClient``, one caller) on a copy of the
    benchmark's database, after a warm-up. Sync endpoints run in worker threads, which cProfile
    does not follow: every thread started after the warm-up gets its own profiler, merged at the end."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from controller.settings import Settings

    copy = database.with_name("profile.db")
    for suffix in ("", "-wal", "-shm"):
        if database.with_name(database.name + suffix).exists():
            shutil.copy(database.with_name(database.name + suffix), copy.with_name(copy.name + suffix))
    app = create_app(Settings(database_url=f"sqlite:///{copy}", admin_token=ADMIN_TOKEN), run_loop=False)
    headers = {"Authorization": f"Bearer {world.gate_token}"}
    # A new, approved version: every profiled call answers `go` (the job is created, as in phase A).
    bodies = [{"deployment": "gated", "environment": "production", "resource": r, "version": "3.0.0"}
              for r in resources]
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        version = ok(admin.post(f"/v1/deployments/{world.gate_deployment}/versions", json={"tag": "3.0.0"}), 201)
        approver = ok(admin.post("/v1/tokens", json={"name": "bob", "role": "approver"}), 201)["token"]
        ok(admin.post("/v1/approvals", json={"versionId": version["id"], "environmentId": world.production,
                                             "status": "approved"}, headers={"Authorization": f"Bearer {approver}"}),
           201)
        # Warm: imports, CEL programs, the policy cache (on a target left out of the profile).
        admin.post("/v1/gate", json={**bodies[0], "resource": world.gate_resources[0]})
    profilers: list[cProfile.Profile] = []

    def start_profiler(*_: object) -> None:  # replaced by the profiler itself once enabled
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()

    threading.setprofile(start_profiler)
    try:
        with TestClient(app, headers=headers) as client:  # fresh event loop and worker threads
            start = time.perf_counter()
            outcomes = Counter(client.post("/v1/gate", json=body).json()["outcome"] for body in bodies)
            elapsed = time.perf_counter() - start
    finally:
        threading.setprofile(None)
    print(f"\nProfile: {len(bodies)} gate calls in-process, one caller ({dict(outcomes)}): "
          f"{elapsed / len(bodies) * 1000:.1f} ms/call (profiled)")
    stats = pstats.Stats(profilers[0])
    for profiler in profilers[1:]:
        stats.add(profiler)
    print("-- by cumulative time, our code --")
    stats.sort_stats("cumulative").print_stats(r"/(api|controller)/", 25)
    print("-- by own time, everything --")
    stats.sort_stats("tottime").print_stats(25)


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gate-callers", type=int, default=50)
    parser.add_argument("--gate-calls", type=int, default=4, help="per caller, in A and in B")
    parser.add_argument("--bare-calls", type=int, default=40, help="per caller, in C")
    parser.add_argument("--gate-targets", type=int, default=400, help="split between A and B")
    parser.add_argument("--pull-agents", type=int, default=8)
    parser.add_argument("--mixed-calls", type=int, default=2, help="gate calls per caller in B")
    parser.add_argument("--jobs", type=int, default=60, help="pending jobs the pull agents drain in B")
    parser.add_argument("--batch-size", type=int, default=None, help="RELEASEGATE_RECONCILE_BATCH_SIZE")
    parser.add_argument("--timeout", type=float, default=400.0, help="bound on each phase")
    parser.add_argument("--profile", action="store_true", help="then cProfile the gate path in-process")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (database, server logs)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rg-bench-agents-"))
    callers, calls = args.gate_callers, args.gate_calls
    print(f"Loopback, SQLite, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {callers} gate callers "
          f"x {calls} calls, {args.pull_agents} pull agents x {args.jobs} jobs, {args.gate_targets} gate targets, "
          f"batch size {args.batch_size or 'default'}")
    try:
        with releasegate(workdir, 60, args.batch_size) as server:
            admin = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                 timeout=120)
            progress("building the world")
            world = build(admin, args.gate_targets, args.jobs)
            half = len(world.gate_resources) // 2
            first, second = world.gate_resources[:half], world.gate_resources[half:]
            gate_only = measured(server, f"A. POST /v1/gate ({callers} callers)", lambda: gate_load(
                server.base_url, world.gate_token, first, "1.0.0", callers, calls, args.timeout))
            # B: a version for the pulled deployment (the loop creates its jobs) while the gate
            # callers ask about the other half of the targets and report each `go` as real agents do.
            approve(admin, world, world.pull_deployment, "1.0.0")
            mixed_gate: list[Phase] = []

            def gates_meanwhile() -> None:
                mixed_gate.append(measured(server, f"B. POST /v1/gate, mixed ({callers})", lambda: gate_load(
                    server.base_url, world.gate_token, second, "1.0.0", callers, args.mixed_calls, args.timeout,
                    report=True)))

            background = threading.Thread(target=gates_meanwhile)
            background.start()
            claims = measured(server, f"B. POST /v1/jobs/{{id}}/claim ({args.pull_agents} agents)",
                              lambda: pull_load(server.base_url, world.pull_token, args.pull_agents, args.jobs,
                                                args.timeout))
            background.join(args.timeout)
            floor = measured(server, f"D. GET agent's pending jobs ({callers})", lambda: read_load(
                server.base_url, world.gate_token, callers, args.bare_calls // 2, args.timeout))
            admin.close()
        with bare(workdir, 60) as bare_server:
            baseline = measured(bare_server, f"C. bare FastAPI POST ({callers} callers)", lambda: gate_load(
                bare_server.base_url, "x", first, "1.0.0", callers, args.bare_calls, args.timeout))

        print("\nPhase                                   count     throughput      p50          p99        server CPU")
        for phase in (gate_only, *mixed_gate, claims, floor, baseline):
            print(phase.line())
        print("  (the two B loads run together: each B line's server CPU is the whole server's, loop included)")
        ratio = gate_only.throughput / baseline.throughput
        cpu_ratio = (baseline.cpu / len(baseline.series.latencies)) / (gate_only.cpu / len(gate_only.series.latencies))
        p99 = gate_only.series.quantile(0.99) * 1000
        print(f"\nGate throughput / bare: {ratio:.1%} (goal >= 30%); by server CPU per request: {cpu_ratio:.1%}")
        floor_ratio, gate_floor = floor.throughput / baseline.throughput, gate_only.throughput / floor.throughput
        print(f"Floor (D, an authenticated read that finds nothing) / bare: {floor_ratio:.1%}; "
              f"gate / floor: {gate_floor:.1%}")
        print(f"Gate p99 at {callers} callers: {p99:.1f} ms (goal < 50 ms); bare p99 "
              f"{baseline.series.quantile(0.99) * 1000:.1f} ms; with {callers} callers that never pause, latency is "
              f"at least {callers} / throughput on average (Little's law): p99 < 50 ms needs "
              f"> {callers / 0.05:.0f} req/s")
        print(f"Goal {'met' if ratio >= 0.30 and p99 < 50 else 'missed'}.")
        if args.profile:
            profile_gate(workdir / "releasegate.db", world, second[:100])
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
