"""When the dispatcher looks at the outbox: at the next due time, when asked, and every interval.

The database is the timer: after each pass the next wake-up is the earliest due time in the
outbox (`outbox.next_due_at`); intake asks for a pass at once (`wake`) after writing rows due
now; and a safety pass runs every interval in case another instance wrote something. The
scheduler (APScheduler, in memory) decides only when to look, never what is owed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from bot.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

SAFETY_JOB_ID = "handover-dispatch-safety"


class Wakeups:
    """Runs `run_pass` in a background scheduler, one pass at a time."""

    def __init__(
        self,
        run_pass: Callable[[], None],
        next_due: Callable[[], datetime | None],
        clock: Clock,
        stopping: threading.Event,
    ) -> None:
        self._run_pass = run_pass
        self._next_due = next_due
        self._clock = clock
        self._stopping = stopping
        self._running = threading.Lock()
        self._rerun = threading.Event()
        self._scheduler: BackgroundScheduler | None = None
        self._wake_job = None
        self._wake_lock = threading.Lock()

    def start(self, interval_seconds: float) -> None:
        """A first pass at once (catching up after downtime), then at due times and intervals."""
        if self._scheduler is not None:
            return
        scheduler = BackgroundScheduler(
            timezone="UTC",
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_job(
            self._scheduled_pass,
            "interval",
            seconds=interval_seconds,
            id=SAFETY_JOB_ID,
            next_run_time=SystemClock().now(),
        )
        self._scheduler = scheduler
        scheduler.start()

    def wake(self) -> None:
        """A pass as soon as possible."""
        self._schedule_at(SystemClock().now())

    def stop(self) -> bool:
        """Stop scheduling and wait for the running pass; whether anything was running."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return False
        scheduler.shutdown(wait=True)
        return True

    def _scheduled_pass(self) -> None:
        if self._stopping.is_set():
            return
        if not self._running.acquire(blocking=False):
            self._rerun.set()  # the running pass will go round once more
            return
        try:
            while True:
                self._rerun.clear()
                self._run_pass()
                if not self._rerun.is_set() or self._stopping.is_set():
                    break
        except Exception:
            logger.exception("dispatch pass failed; the next pass will retry")
        finally:
            self._running.release()
            self._plan_next_wake()

    def _plan_next_wake(self) -> None:
        if self._stopping.is_set():
            return
        try:
            due = self._next_due()
        except Exception:
            logger.exception("could not read the next due time; the safety pass will look")
            return
        if due is None:
            return
        # The scheduler runs on the wall clock; ours may be simulated, so convert the wait
        # rather than the instant.
        wait = max(timedelta(0), due - self._clock.now())
        self._schedule_at(SystemClock().now() + wait)

    def _schedule_at(self, run_at: datetime) -> None:
        scheduler = self._scheduler
        if scheduler is None or self._stopping.is_set():
            return
        with self._wake_lock:
            if self._wake_job is not None:
                with contextlib.suppress(JobLookupError):  # it may have run already
                    self._wake_job.remove()
            # A fresh id each time: a date job never waits on the previous one's instance.
            self._wake_job = scheduler.add_job(self._scheduled_pass, "date", run_date=run_at)
