"""Prometheus metrics: every metric the process exports, in one registry per application.

Why per application and not the client library's global registry: tests build many apps in one
process, and a global registry refuses a second registration of the same name. Each ``Metrics`` owns
a ``CollectorRegistry`` that ``/metrics`` renders, so two apps never collide and counters start at zero
with the app, as they would with a fresh process.

What is measured and where:

- the controller loop reports every pass (``Loop`` times it and hands over the ``PassResult``): pass
  duration, failures, targets claimed and evaluated, jobs created, leases expired, verification runs
  started and measurements taken, and decisions appended to the decision log by outcome;
- the gate route times ``POST /v1/gate`` by outcome;
- jobs by status are counted in the database at scrape time (one ``GROUP BY``), only by processes that
  run the controller, so that summing over API replicas does not multiply them.

Must not: import FastAPI, or change anything it measures (a failed count is logged, never raised).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlmodel import col, select

from controller.decision import Outcome
from controller.facts import JobStatus
from controller.store.db import Store
from controller.store.tables import JobRow

log = logging.getLogger(__name__)

# A pass over a few targets takes milliseconds; 6,000 targets take seconds.
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
GATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PassStats(Protocol):
    """What a controller pass reports (``controller.store.reconciler.PassResult``)."""

    @property
    def evaluated(self) -> int: ...

    @property
    def jobs_created(self) -> int: ...

    @property
    def leases_expired(self) -> int: ...

    @property
    def logged_outcomes(self) -> Sequence[str]: ...

    @property
    def measurements(self) -> int: ...

    @property
    def verifications_started(self) -> int: ...


class Metrics:
    def __init__(self, *, role: str, version: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("releasegate_info", "Always 1; labels say what runs here.", ["role", "version"], registry=r).labels(
            role, version
        ).set(1)
        self.pass_duration = Histogram(
            "releasegate_reconcile_pass_duration_seconds", "Duration of controller passes, failed ones included.",
            registry=r, buckets=PASS_BUCKETS,
        )
        self.pass_failures = Counter("releasegate_reconcile_pass_failures", "Controller passes that raised.",
                                     registry=r)
        self.due_targets = Gauge("releasegate_reconcile_due_targets",
                                 "Targets the last pass of this process claimed and evaluated.", registry=r)
        self.targets_evaluated = Counter("releasegate_reconcile_targets_evaluated",
                                         "Targets claimed and evaluated by this process.", registry=r)
        self.jobs_created = Counter("releasegate_reconcile_jobs_created", "Jobs created by controller passes.",
                                    registry=r)
        self.leases_expired = Counter("releasegate_job_leases_expired",
                                      "inProgress jobs marked lost because their lease lapsed.", registry=r)
        self.verifications_started = Counter("releasegate_verifications_started",
                                             "Verification runs started for successful jobs.", registry=r)
        self.measurements = Counter("releasegate_verification_measurements",
                                    "Verification measurements taken and recorded.", registry=r)
        self.decisions = Counter("releasegate_decisions", "Decisions appended to the decision log, by outcome.",
                                 ["outcome"], registry=r)
        self.gate_latency = Histogram("releasegate_gate_request_duration_seconds",
                                      "POST /v1/gate handling time, by answer.", ["outcome"], registry=r,
                                      buckets=GATE_BUCKETS)
        for outcome in Outcome:  # every series exists from the start, so rate() sees the first event
            self.decisions.labels(outcome.value)
            self.gate_latency.labels(outcome.value)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)

    def watch_jobs(self, store: Store) -> None:
        """Export ``releasegate_jobs{status}``, counted in ``store`` at each scrape."""
        self.registry.register(JobsByStatus(store))

    def pass_succeeded(self, seconds: float, result: PassStats | None) -> None:
        self.pass_duration.observe(seconds)
        if result is None:
            return
        self.due_targets.set(result.evaluated)
        self.targets_evaluated.inc(result.evaluated)
        self.jobs_created.inc(result.jobs_created)
        self.leases_expired.inc(result.leases_expired)
        self.verifications_started.inc(result.verifications_started)
        self.measurements.inc(result.measurements)
        for outcome in result.logged_outcomes:
            self.decisions.labels(outcome).inc()

    def pass_failed(self, seconds: float) -> None:
        self.pass_duration.observe(seconds)
        self.pass_failures.inc()

    def gate_answered(self, outcome: str, seconds: float) -> None:
        self.gate_latency.labels(outcome).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format, for ``/metrics``."""
        return generate_latest(self.registry)


class JobsByStatus(Collector):
    """``releasegate_jobs{status}``: a gauge read from the database, every status present (0 if none)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        try:
            with self._store.session() as session:
                rows = session.exec(select(JobRow.status, func.count()).group_by(col(JobRow.status))).all()
        except Exception:  # a scrape must still answer; the series go stale instead
            log.warning("could not count jobs by status for /metrics", exc_info=True)
            return
        counts = {status.value: 0 for status in JobStatus} | {status: count for status, count in rows}
        family = self._family()
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("releasegate_jobs", "Jobs in the database, by status.", labels=["status"])
