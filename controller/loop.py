"""The controller loop's lifecycle: APScheduler wakes it, the database holds the work.

APScheduler (3.11, in-memory job store) only decides *when* a pass runs: an interval tick, plus a
one-shot at the earliest instant something becomes due, re-armed after every pass. It holds no
durable state, so a crash loses nothing. Passes never overlap (``max_instances=1``), and a missed
wake-up runs late rather than being dropped (``misfire_grace_time=None``: the default of one second
silently drops a one-shot that was missed). Each pass is timed and reported to an optional observer
(the Prometheus metrics). ``stop()`` lets a running pass finish, so a graceful shutdown never cuts one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar

from apscheduler.schedulers.background import BackgroundScheduler

from controller.clock import Clock

log = logging.getLogger(__name__)


class PassOutcome(Protocol):
    @property
    def next_wake_at(self) -> datetime | None: ...


PassT = TypeVar("PassT", bound=PassOutcome)
PassT_contra = TypeVar("PassT_contra", contravariant=True)


class PassObserver(Protocol[PassT_contra]):
    """Told how long each pass took and what it reported (``controller.metrics.Metrics``)."""

    def pass_succeeded(self, seconds: float, result: PassT_contra | None) -> None: ...

    def pass_failed(self, seconds: float) -> None: ...


class Loop(Generic[PassT]):
    def __init__(self, run_pass: Callable[[datetime], PassT | None], clock: Clock, *, interval_seconds: float = 2.0,
                 observer: PassObserver[PassT] | None = None, min_gap_seconds: float = 0.25) -> None:
        self._run_pass = run_pass
        self._clock = clock
        self._interval = interval_seconds
        self._observer = observer
        # Nudges: passes they start begin at least this long after the previous one ended.
        self._min_gap = min_gap_seconds
        self._state = threading.Lock()  # guards the four fields below; never held during a pass
        self._busy = False
        self._again = False  # a nudge arrived while a pass ran
        self._wake_at: datetime | None = None  # when the one-shot "wake" job is armed for
        self._last_end = float("-inf")  # time.monotonic() at the end of the last pass
        self._scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._lock = threading.Lock()
        self.passes = 0
        self.failures = 0
        self.failing = 0  # failed passes since the last one that succeeded
        self.last_pass_at: datetime | None = None

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.add_job(self.run_once, "interval", seconds=self._interval, id="tick")
        self._scheduler.start()
        self.nudge()

    def stop(self) -> None:
        """Stop waking up; a pass that is running finishes (and commits) first."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def nudge(self) -> None:
        """Run a pass soon, after a write that made targets dirty. Nudges coalesce: one that lands while a
        pass runs is served by one more pass right after it (the running pass may have read before the
        write), and a nudged pass starts ``min_gap_seconds`` after the previous one ended at the
        earliest. A burst of writes thus costs a few passes over many targets each, not one pass per
        write, each taking the write lock and paying a pass's fixed cost."""
        with self._state:
            if self._busy:
                self._again = True
                return
        self._arm(datetime.now(UTC))

    def run_once(self) -> PassT | None:
        """One pass; ``now`` is read once and handed to everything the pass does."""
        with self._lock:
            with self._state:
                self._busy = True
                if self._wake_at is not None and self._wake_at <= datetime.now(UTC):
                    self._wake_at = None  # this pass serves the wake-up
            try:
                outcome = self._pass()
            finally:
                with self._state:
                    self._busy = False
                    self._last_end = time.monotonic()
                    again, self._again = self._again, False
                    if self._wake_at is not None and self._wake_at <= datetime.now(UTC):
                        self._wake_at, again = None, True  # came due during this pass, which skipped it
        if again:
            self.nudge()
        if outcome is not None and outcome.next_wake_at is not None:
            self._arm(outcome.next_wake_at)
        return outcome

    def _pass(self) -> PassT | None:
        now = self._clock.now()
        started = time.perf_counter()  # a duration for metrics, never a decision input
        try:
            outcome = self._run_pass(now)
        except Exception:
            self.failures += 1
            self.failing += 1
            if self._observer is not None:
                self._observer.pass_failed(time.perf_counter() - started)
            log.exception("controller pass failed; the next tick retries")
            return None
        if self._observer is not None:
            self._observer.pass_succeeded(time.perf_counter() - started, outcome)
        self.passes += 1
        self.failing = 0
        self.last_pass_at = now
        return outcome

    def _arm(self, at: datetime) -> None:
        """Arm the one-shot wake-up at ``at``, or ``min_gap_seconds`` after the last pass ended if that is
        later (also keeping a wake-up armed from inside a pass from coming due before that pass returns:
        it would be skipped), unless one is armed already, still to come and no later."""
        with self._state:  # held across add_job, so that concurrent arms keep the earliest instant
            if not self._scheduler.running:
                return
            now = datetime.now(UTC)
            at = max(at, now + timedelta(seconds=max(0.0, self._min_gap - (time.monotonic() - self._last_end))))
            if self._wake_at is not None and now < self._wake_at <= at:
                return
            self._wake_at = at
            self._scheduler.add_job(self.run_once, "date", run_date=at, id="wake", replace_existing=True)
