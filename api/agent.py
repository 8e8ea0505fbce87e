"""``releasegate agent``: a small reference pull agent.

It polls its job agent's pending jobs, claims one (a 409 means another agent won it: move on),
runs the configured shell command with the job's context in environment variables, heartbeats
while the command runs, and reports ``successful`` or ``failure`` with the output's tail. It is
both a useful tool and the end-to-end tests' agent.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("releasegate.agent")
OUTPUT_TAIL = 4000


@dataclass(frozen=True)
class AgentConfig:
    url: str
    token: str
    agent: str  # job agent id or name
    command: str
    poll_seconds: float = 2.0
    heartbeat_seconds: float = 10.0
    timeout_seconds: float = 3600.0


def job_environment(job: Mapping[str, Any]) -> dict[str, str]:
    """The job's context as RELEASEGATE_* variables; the whole context as JSON too."""
    return {
        "RELEASEGATE_JOB_ID": job["id"],
        "RELEASEGATE_JOB_ATTEMPT": str(job["attempt"]),
        "RELEASEGATE_RELEASE_TARGET_ID": job["releaseTargetId"],
        "RELEASEGATE_VERSION_ID": job["version"]["id"],
        "RELEASEGATE_VERSION_TAG": job["version"]["tag"],
        "RELEASEGATE_DEPLOYMENT_SLUG": job["deployment"]["slug"],
        "RELEASEGATE_ENVIRONMENT_NAME": job["environment"]["name"],
        "RELEASEGATE_RESOURCE_IDENTIFIER": job["resource"]["identifier"],
        "RELEASEGATE_RESOURCE_NAME": job["resource"]["name"],
        "RELEASEGATE_JOB_CONFIG": json.dumps(job["config"]),
        "RELEASEGATE_JOB_CONTEXT": json.dumps(job),
    }


class Agent:
    def __init__(self, config: AgentConfig, client: httpx.Client | None = None) -> None:
        self.config = config
        self.client = client or httpx.Client(
            base_url=config.url, headers={"Authorization": f"Bearer {config.token}"}, timeout=30.0
        )

    def run(self, *, once: bool = False) -> int:
        """Work until stopped; with ``once``, stop when no pending job is left. Returns jobs handled."""
        handled = 0
        while True:
            job = self.next_job()
            if job is not None:
                self.execute(job)
                handled += 1
                continue
            if once:
                return handled
            time.sleep(self.config.poll_seconds)

    def next_job(self) -> dict[str, Any] | None:
        response = self.client.get(f"/v1/job-agents/{self.config.agent}/jobs", params={"status": "pending"})
        response.raise_for_status()
        for item in response.json()["items"]:
            claimed = self.client.post(f"/v1/jobs/{item['id']}/claim")
            if claimed.status_code == 409:
                continue  # another agent got it first
            claimed.raise_for_status()
            result: dict[str, Any] = claimed.json()
            return result
        return None

    def execute(self, job: Mapping[str, Any]) -> bool:
        log.info("running job %s: %s to %s", job["id"], job["version"]["tag"], job["resource"]["identifier"])
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job["id"], done), daemon=True)
        beat.start()
        try:
            completed = subprocess.run(
                self.config.command, shell=True, capture_output=True, text=True,
                env={**os.environ, **job_environment(job)}, timeout=self.config.timeout_seconds,
            )
            ok, output = completed.returncode == 0, (completed.stdout + completed.stderr)[-OUTPUT_TAIL:]
            message = output.strip() or f"exit status {completed.returncode}"
        except subprocess.TimeoutExpired:
            ok, message = False, f"timed out after {self.config.timeout_seconds}s"
        finally:
            done.set()
            beat.join()
        status = "successful" if ok else "failure"
        reported = self.client.patch(f"/v1/jobs/{job['id']}", json={"status": status, "message": message})
        if reported.status_code == 409:
            # The job left inProgress while the command ran (its lease lapsed and it became lost, or
            # an operator cancelled it): the server keeps its status. Report that and keep working.
            log.warning("job %s could not be reported %s: %s", job["id"], status, reported.text)
            return ok
        reported.raise_for_status()
        log.info("job %s %s", job["id"], status)
        return ok

    def _heartbeat(self, job_id: str, done: threading.Event) -> None:
        while not done.wait(self.config.heartbeat_seconds):
            try:
                self.client.post(f"/v1/jobs/{job_id}/heartbeat")
            except httpx.HTTPError as exc:  # the next beat may get through; the lease tolerates a miss
                log.warning("heartbeat failed: %s", exc)
