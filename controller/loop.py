"""The controller loop's lifecycle: APScheduler wakes it, the database holds the work.

APScheduler (3.11, in-memory job store) only decides *when* a pass runs: an interval tick, plus a
one-shot at the earliest instant something becomes due, re-armed after every pass. It holds no
durable state, so a crash loses nothing. Passes never overlap (``max_instances=1``), and a missed
wake-up runs late rather than being dropped (``misfire_grace_time=None``: the default of one second
silently drops a one-shot that was missed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler

from controller.clock import Clock

log = logging.getLogger(__name__)


class PassOutcome(Protocol):
    @property
    def next_wake_at(self) -> datetime | None: ...


PassFn = Callable[[datetime], PassOutcome | None]


class Loop:
    def __init__(self, run_pass: PassFn, clock: Clock, *, interval_seconds: float = 2.0) -> None:
        self._run_pass = run_pass
        self._clock = clock
        self._interval = interval_seconds
        self._scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._lock = threading.Lock()
        self.passes = 0
        self.failures = 0
        self.last_pass_at: datetime | None = None

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.add_job(self.run_once, "interval", seconds=self._interval, id="tick")
        self._scheduler.start()
        self.nudge()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def nudge(self) -> None:
        """Run a pass as soon as possible (after a write that made targets dirty)."""
        self._arm(datetime.now(UTC))

    def run_once(self) -> PassOutcome | None:
        """One pass; ``now`` is read once and handed to everything the pass does."""
        with self._lock:
            now = self._clock.now()
            try:
                outcome = self._run_pass(now)
            except Exception:
                self.failures += 1
                log.exception("controller pass failed; the next tick retries")
                return None
            self.passes += 1
            self.last_pass_at = now
        if outcome is not None and outcome.next_wake_at is not None:
            self._arm(outcome.next_wake_at)
        return outcome

    def _arm(self, at: datetime) -> None:
        if not self._scheduler.running:
            return
        self._scheduler.add_job(self.run_once, "date", run_date=at, id="wake", replace_existing=True)
