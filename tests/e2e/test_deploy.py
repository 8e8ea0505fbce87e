"""Acceptance: the deploy/ artifacts describe processes that work, run here as local processes.

Docker and Kubernetes cannot run on the test machine, so this reads ``deploy/compose.yaml`` and the
manifests in ``deploy/kubernetes/``, checks that they run one image with the same commands, and then
starts exactly those commands (``releasegate migrate``, ``releasegate serve --role api|controller``)
with the ConfigMap's settings on a throwaway PostgreSQL: one migration, two API processes and two
controller processes, like the compose file. A version is driven to a job through the API processes
alone, so only the controllers can have created it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ADMIN_TOKEN, RELEASEGATE, ManagedProcess, ServerProcess, server_env, start_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TIMEOUT = 45.0
Doc = dict[str, Any]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def compose_services() -> dict[str, Doc]:
    services: dict[str, Doc] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return services


def manifests() -> list[Doc]:
    docs: list[Doc] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def of_kind(kind: str, component: str | None = None) -> list[Doc]:
    return [d for d in manifests() if d["kind"] == kind
            and (component is None or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)]


def containers(workload: Doc) -> list[Doc]:
    found: list[Doc] = workload["spec"]["template"]["spec"]["containers"]
    return found


def config_map() -> dict[str, str]:
    [cm] = of_kind("ConfigMap")
    data: dict[str, str] = cm["data"]
    return data


# ------------------------------------------------------------------------------------- the files


def test_compose_runs_one_image_as_migration_api_and_controller() -> None:
    services = compose_services()
    image = {(services[name]["image"], repr(services[name]["build"])) for name in ("migrate", "api", "controller")}
    assert len(image) == 1, image
    build = services["api"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"

    assert services["migrate"]["command"] == ["releasegate", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for role in ("api", "controller"):
        service = services[role]
        assert service["command"] == ["releasegate", "serve", "--role", role]
        assert service["deploy"]["replicas"] == 2
        assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert service["environment"]["RELEASEGATE_MIGRATE"] == "false"
        assert service["environment"]["RELEASEGATE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "ports" not in service  # reached through the proxy (api) or not at all (controller)
    assert "RELEASEGATE_ADMIN_TOKEN" in services["api"]["environment"]
    assert "RELEASEGATE_ADMIN_TOKEN" not in services["controller"]["environment"]

    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert "server api:8080 resolve" in (DEPLOY / "nginx.conf").read_text()


def test_the_dockerfile_is_slim_non_root_and_probes_healthz_without_curl() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    assert [line for line in lines if line.startswith("FROM ")][-1] == "FROM python:3.11-slim"
    [user] = [line for line in lines if line.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in ("0", "root")
    healthcheck = " ".join(lines[lines.index(next(x for x in lines if x.startswith("HEALTHCHECK"))):][:2])
    assert "urllib.request" in healthcheck and "/healthz" in healthcheck and "curl" not in healthcheck


def test_kubernetes_manifests_run_the_compose_commands_with_probes() -> None:
    services = compose_services()
    kinds = {d["kind"] for d in manifests()}
    assert kinds == {"Kustomization", "ConfigMap", "Secret", "Job", "Deployment", "Service"}
    [job] = of_kind("Job")
    assert [c["command"] for c in containers(job)] == [services["migrate"]["command"]]
    images = {c["image"] for c in containers(job)}
    for role in ("api", "controller"):
        [deployment] = of_kind("Deployment", role)
        [container] = containers(deployment)
        assert container["command"] == services[role]["command"]
        images.add(container["image"])
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert len(images) == 1, images
    [service] = of_kind("Service")
    [api] = of_kind("Deployment", "api")
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    assert config_map()["RELEASEGATE_MIGRATE"] == "false"

    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).is_file(), resource
    assert "secret.yaml" not in kustomization["resources"]  # a placeholder credential is never applied


# ------------------------------------------------------------------------------------- bad configuration


def run_serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environ = server_env(tmp_path, 1, None, env)
    return subprocess.run([str(RELEASEGATE), "serve", *args], env=environ, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("env, args, message", [
    ({"RELEASEGATE_PORT": "http"}, (), "RELEASEGATE_PORT: expected an integer, got 'http'"),
    ({"RELEASEGATE_ROLE": "worker"}, (), "RELEASEGATE_ROLE: expected one of all, api, controller, got 'worker'"),
    ({}, ("--config", "bad.toml"), "unknown setting 'loop_interval'; did you mean 'loop_interval_seconds'?"),
])
def test_bad_configuration_stops_serve_with_one_line_naming_the_setting(
    tmp_path: Path, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "bad.toml").write_text("loop_interval = 5\n")
    done = run_serve(tmp_path, env, *args)
    assert done.returncode == 2, done
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------------- the processes


def metrics(server: ServerProcess) -> Samples:
    response = httpx.get(f"{server.base_url}/metrics", timeout=5.0)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def families(server: ServerProcess) -> set[str]:
    return {family.name for family in text_string_to_metric_families(httpx.get(f"{server.base_url}/metrics").text)}


def wait_for(what: str, probe: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
    return value


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def local(command: list[str]) -> list[str]:
    assert command[0] == "releasegate", command
    return [str(RELEASEGATE), *command[1:]]


@pytest.mark.postgres
def test_the_compose_roles_as_local_processes_share_one_database(pg_url: str, tmp_path: Path) -> None:
    services = compose_services()
    # The ConfigMap's settings, on this machine: a local port each, this database, a 1 s tick for speed.
    settings = {k: v for k, v in config_map().items() if k not in ("RELEASEGATE_HOST", "RELEASEGATE_PORT")}
    env = settings | {"RELEASEGATE_DATABASE_URL": pg_url, "RELEASEGATE_LOOP_INTERVAL_SECONDS": "1"}

    # Before the migration job has run, a replica refuses to start, and says why.
    early = ManagedProcess(local(services["api"]["command"]), env=server_env(tmp_path, 1, ADMIN_TOKEN, env),
                           cwd=tmp_path, log_path=tmp_path / "early-api.log")
    assert early.process.wait(60) == 1, early.log()
    assert "run `releasegate migrate` first" in early.log() and "Traceback" not in early.log(), early.log()

    migrate = ManagedProcess(local(services["migrate"]["command"]), env=server_env(tmp_path, 1, None, env),
                             cwd=tmp_path, log_path=tmp_path / "migrate.log")
    assert migrate.process.wait(120) == 0, migrate.log()
    assert "migrated" in migrate.log()

    def start(role: str, n: int, token: str | None) -> ServerProcess:
        args = local(services[role]["command"])[2:]  # ServerProcess runs `releasegate serve` itself
        return start_server(tmp_path, admin_token=token, env=env, name=f"{role}-{n}", args=args)

    servers: list[ServerProcess] = []
    try:
        # Like compose: all four start at once; the API replicas get the admin token (both store it, one
        # first), the controllers only the database.
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(start, role, n, ADMIN_TOKEN if role == "api" else None)
                       for role in ("api", "controller") for n in (1, 2)]
        done = [f.result() for f in futures if f.exception() is None]
        servers += done
        for future in futures:
            future.result()  # raises the first start-up failure, once every started server is tracked
        apis, controllers = servers[:2], servers[2:]
        check_roles(apis, controllers)
        drive_a_version_to_a_job(apis, controllers)
    except BaseException:
        for server in servers:
            print(f"----- {server.log_path.name} -----\n{server.log()}")
        raise
    finally:
        codes = {server.log_path.name: server.stop() for server in servers}
    assert codes == {server.log_path.name: 0 for server in servers}, codes  # SIGTERM: every role exits 0
    for server in servers:
        assert "Traceback" not in server.log(), server.log()
        assert not server.killed


def check_roles(apis: list[ServerProcess], controllers: list[ServerProcess]) -> None:
    for api in apis:
        assert ok(api.client.get("/readyz")) == {"status": "ok", "role": "api", "checks": {"database": "ok"}}
        assert api.client.get("/docs").status_code == 200
    for controller in controllers:
        with controller.new_client(ADMIN_TOKEN) as client:  # a valid token changes nothing: no API here
            assert ok(client.get("/healthz")) == {"status": "ok"}
            readiness = ok(client.get("/readyz"))
            assert (readiness["role"], readiness["checks"]) == ("controller", {"database": "ok", "controller": "ok"})
            for path in ("/v1/systems", "/v1/release-targets", "/docs", "/openapi.json"):
                assert client.get(path).status_code == 404, path
            assert client.post("/v1/systems", json={"name": "nope"}).status_code == 404


def drive_a_version_to_a_job(apis: list[ServerProcess], controllers: list[ServerProcess]) -> None:
    """Every write alternates between the API processes, which run no loop: the controllers must act."""
    first, second = apis[0].client, apis[1].client
    agent = ok(first.post("/v1/job-agents", json={"name": "runner"}), 201)
    system = ok(second.post("/v1/systems", json={"name": "shop"}), 201)
    ok(first.post("/v1/environments", json={"systemId": system["id"], "name": "production",
                                             "resourceSelector": "resource.kind == 'k8s'"}), 201)
    deployment = ok(second.post("/v1/deployments", json={"systemId": system["id"], "name": "API", "slug": "api",
                                                          "jobAgentId": agent["id"]}), 201)
    ok(first.post("/v1/resources", json={"identifier": "k8s-1", "name": "k8s-1", "kind": "k8s"}), 201)
    version = ok(second.post(f"/v1/deployments/{deployment['id']}/versions", json={"tag": "1.0.0"}), 201)

    def jobs() -> list[Doc]:
        items: list[Doc] = ok(first.get(f"/v1/job-agents/{agent['id']}/jobs"))["items"]
        return items

    [job] = wait_for("the controllers to create the job", jobs)
    assert (job["versionId"], job["status"], job["attempt"]) == (version["id"], "pending", 1)

    # Two more passes of each controller after the job appeared: still exactly one job.
    seen = [sample(metrics(c), "releasegate_reconcile_pass_duration_seconds_count") for c in controllers]
    for controller, passes in zip(controllers, seen, strict=True):
        wait_for(f"two more passes of {controller.log_path.name}", lambda c=controller, p=passes: sample(
            metrics(c), "releasegate_reconcile_pass_duration_seconds_count") >= p + 2)
    assert [j["id"] for j in jobs()] == [job["id"]]

    scraped = [metrics(c) for c in controllers]
    assert sum(sample(s, "releasegate_reconcile_jobs_created_total") for s in scraped) == 1
    assert sum(sample(s, "releasegate_decisions_total", outcome="go") for s in scraped) >= 1
    assert sum(sample(s, "releasegate_reconcile_targets_evaluated_total") for s in scraped) >= 1
    assert [sample(s, "releasegate_jobs", status="pending") for s in scraped] == [1, 1]  # the database's count
    assert all(sample(s, "releasegate_reconcile_pass_failures_total") == 0 for s in scraped)
    wanted = {"releasegate_reconcile_pass_duration_seconds", "releasegate_reconcile_due_targets",
              "releasegate_jobs", "releasegate_decisions", "releasegate_info"}
    for controller in controllers:
        assert wanted <= families(controller)

    # The gate, asked through an API process, is timed there by its answer.
    gate = ok(second.post("/v1/gate", json={"deployment": "api", "environment": "production", "resource": "k8s-1",
                                            "version": "1.0.0"}))
    gated = metrics(apis[1])
    assert sample(gated, "releasegate_gate_request_duration_seconds_count", outcome=gate["outcome"]) == 1
    assert sample(metrics(apis[0]), "releasegate_gate_request_duration_seconds_count", outcome=gate["outcome"]) == 0
    assert sample(gated, "releasegate_info", role="api", version="0.1.0") == 1
    assert "releasegate_jobs" not in families(apis[1])
