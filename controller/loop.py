"""The controller loop's lifecycle: APScheduler wakes it, the database holds the work.

APScheduler (3.11, in-memory job store) only decides *when* to run a pass: an interval tick for
now. It holds no durable state, so a crash loses nothing; passes never overlap
(``max_instances=1``) and a missed wake-up is run late rather than dropped
(``misfire_grace_time=None``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from apscheduler.schedulers.background import BackgroundScheduler

from controller.clock import Clock

log = logging.getLogger(__name__)

PassFn = Callable[[datetime], object]


class Loop:
    def __init__(self, run_pass: PassFn, clock: Clock, *, interval_seconds: float = 5.0) -> None:
        self._run_pass = run_pass
        self._clock = clock
        self._interval = interval_seconds
        self._scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._lock = threading.Lock()
        self.passes = 0
        self.last_pass_at: datetime | None = None

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.add_job(self.run_once, "interval", seconds=self._interval, id="tick")
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def run_once(self) -> None:
        """One pass; ``now`` is read once and handed to everything the pass does."""
        with self._lock:
            now = self._clock.now()
            try:
                self._run_pass(now)
            except Exception:
                log.exception("controller pass failed; the next tick retries")
                return
            self.passes += 1
            self.last_pass_at = now
