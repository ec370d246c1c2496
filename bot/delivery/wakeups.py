"""When the dispatcher looks at the outbox: at the next due time, when told, and every interval.

The database is the timer: after each pass the next wake-up is the earliest due time in the
outbox (`outbox.next_due_at`). Whatever writes outbox rows, in whichever process, wakes the
dispatcher (`OutboxWatch`): on PostgreSQL a transaction that adds rows is followed by a NOTIFY
(`outbox.announce`) that the dispatcher LISTENs for; on SQLite the dispatcher polls
`PRAGMA data_version` (which moves when another connection commits) every
`SQLITE_POLL_SECONDS`. A pass then sends what is due
and schedules the next wake-up at the earliest due row, so a row due later is sent at its
instant. A safety pass runs every interval in case a signal was missed (a reconnect). The
scheduler (APScheduler, in memory) decides only when to look, never what is owed.
See docs/timing.md ("How fast").

A daily job (`Daily`: the dispatcher's retention run) goes on the same scheduler: once at start,
then at each instant its `next_at` names; whether a run is still owed that day is, again, the
database's to say.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from bot.clock import Clock, SystemClock
from bot.delivery.outbox import NOTIFY_CHANNEL

logger = logging.getLogger(__name__)

SAFETY_JOB_ID = "handover-dispatch-safety"
# How often the SQLite watch reads PRAGMA data_version: about 6 µs a read, so 20 reads a second
# cost nothing, and a row written by another process is seen within 50 ms
# (benchmarks/bench_wake.py).
SQLITE_POLL_SECONDS = 0.05
# How long the PostgreSQL listener waits before connecting again after losing its connection.
RELISTEN_SECONDS = 1.0


@dataclass(frozen=True)
class Daily:
    """A job run at start and then at `next_at(the instant it last ran for)`, on our clock."""

    run: Callable[[], None]
    next_at: Callable[[datetime], datetime]


class Wakeups:
    """Runs `run_pass` in a background scheduler, one pass at a time."""

    def __init__(
        self,
        run_pass: Callable[[], None],
        next_due: Callable[[], datetime | None],
        clock: Clock,
        stopping: threading.Event,
        daily: Daily | None = None,
    ) -> None:
        self._run_pass = run_pass
        self._daily = daily
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
        if self._daily is not None:
            scheduler.add_job(
                self._daily_run, "date", run_date=SystemClock().now(), args=[self._clock.now()]
            )
        self._scheduler = scheduler
        scheduler.start()

    def wake(self) -> None:
        """A pass as soon as possible."""
        self._schedule_at(SystemClock().now())

    def stop(self) -> bool:
        """Stop scheduling and wait for the running pass; whether anything was running."""
        # Taken from the jobs under the lock they add their next job under: APScheduler's
        # shutdown(wait=True) holds its job stores' lock while it waits for the running jobs,
        # so a job adding one then would wait for that lock for ever (a hung stop). After this
        # no job adds one, and one adding one now finishes before the shutdown begins.
        with self._wake_lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return False
        # Jobs first: APScheduler marks itself stopped before it takes its job stores' lock,
        # so a date job its thread is submitting at that moment is then looked for among the
        # jobs pending a start, not found, and its thread dies on JobLookupError (a traceback
        # on a stop just after a start). Removing the jobs takes that lock, so it waits for
        # the thread's round to end, and leaves it nothing to submit after.
        scheduler.remove_all_jobs()
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

    def _daily_run(self, planned: datetime) -> None:
        """The daily job planned for `planned` (our clock), then the next one: at
        `next_at(planned)`, or at once when that instant has already passed (a run that
        overran it, or a clock that jumped ahead: one run then covers the days between)."""
        daily = self._daily
        if daily is None or self._stopping.is_set():
            return
        if self._clock.now() < planned:
            # Our clock is simulated and behind the scheduler's: not time yet, look again.
            self._plan_daily(planned)
            return
        try:
            daily.run()
        except Exception:
            logger.exception("the daily job failed; it runs again at its next time")
        # From `planned`, not from now: a run at start that ends after 03:00 must not skip
        # that day's run until tomorrow.
        self._plan_daily(max(daily.next_at(planned), self._clock.now()))

    def _plan_daily(self, at: datetime) -> None:
        # As for wake-ups: convert the wait, not the instant (our clock may be simulated).
        wait = max(timedelta(0), at - self._clock.now())
        with self._wake_lock:  # see `stop`
            scheduler = self._scheduler
            if scheduler is None or self._stopping.is_set():
                return
            # A fresh id each time, as for wake-ups: never refused as a second running instance.
            scheduler.add_job(
                self._daily_run, "date", run_date=SystemClock().now() + wait, args=[at]
            )

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
        with self._wake_lock:  # see `stop`
            scheduler = self._scheduler
            if scheduler is None or self._stopping.is_set():
                return
            if self._wake_job is not None:
                with contextlib.suppress(JobLookupError):  # it may have run already
                    self._wake_job.remove()
            # A fresh id each time: a date job never waits on the previous one's instance.
            self._wake_job = scheduler.add_job(self._scheduled_pass, "date", run_date=run_at)


class OutboxWatch:
    """Calls `on_change` soon after any process commits new outbox rows (see the module doc),
    or new rows of another table that NOTIFYs its own `channel` (bot/slackjobs/queue.py). With
    `on_notify`, each NOTIFY is given to it with its payload instead (PostgreSQL only).

    Runs in a daemon thread of its own with a connection of its own, so it never takes one
    from the pool the passes use. After (re)connecting it calls `on_change` once, since rows
    written while it was not listening sent no signal it could see.
    """

    def __init__(
        self,
        engine: Engine,
        on_change: Callable[[], None],
        *,
        channel: str = NOTIFY_CHANNEL,
        name: str = "outbox",
        on_notify: Callable[[str], None] | None = None,
    ) -> None:
        self._url = engine.url
        self._on_change = on_change
        self._on_notify = on_notify
        self._channel = channel  # the NOTIFY channel; the slack_jobs table has its own
        self._name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def mechanism(self) -> str | None:
        """`listen` (PostgreSQL), `data_version` (an SQLite file), or None (in-memory SQLite:
        only this process writes, and it wakes the dispatcher itself)."""
        backend = self._url.get_backend_name()
        if backend == "postgresql":
            return "listen"
        if backend == "sqlite" and self._url.database not in (None, "", ":memory:"):
            return "data_version"
        return None

    def start(self) -> None:
        """Start watching in a thread of its own (nothing to watch: nothing started)."""
        mechanism = self.mechanism
        if mechanism is None or self._thread is not None:
            return
        self._stopping.clear()
        run = self._listen if mechanism == "listen" else self._poll_data_version
        self._thread = threading.Thread(
            target=run, name=f"handover-{self._name}-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, waiting a few seconds for the thread to end."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:
            logger.exception("waking the dispatcher failed; the safety pass will look")

    def _notified(self, payload: str) -> None:
        if self._on_notify is None:
            self._changed()
            return
        try:
            self._on_notify(payload)
        except Exception:
            logger.exception("handling a %s notification failed; the safety pass will look",
                             self._name)  # fmt: skip

    def _poll_data_version(self) -> None:
        path = self._url.database
        assert path is not None
        while not self._stopping.is_set():
            try:
                # mode=rw: never create the file; autocommit: never hold a lock or a snapshot.
                connection = sqlite3.connect(
                    f"{Path(path).absolute().as_uri()}?mode=rw",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error:
                logger.warning("cannot watch %s for new rows; retrying", path, exc_info=True)
                self._stopping.wait(RELISTEN_SECONDS)
                continue
            try:
                seen = connection.execute("PRAGMA data_version").fetchone()[0]
                self._changed()
                while not self._stopping.wait(SQLITE_POLL_SECONDS):
                    version = connection.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen:
                        seen = version
                        self._changed()
            except sqlite3.Error:
                logger.warning("lost the watch on %s; reopening it", path, exc_info=True)
                self._stopping.wait(RELISTEN_SECONDS)
            finally:
                connection.close()

    def _listen(self) -> None:
        import psycopg

        from bot.db import SERVICE_TIMEOUTS, postgres_connect_args

        conninfo = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    conninfo, autocommit=True, **postgres_connect_args(SERVICE_TIMEOUTS)
                ) as connection:
                    connection.execute(f"LISTEN {self._channel}")
                    self._changed()
                    while not self._stopping.is_set():
                        # Wakes at least once a second to notice `stop`.
                        for notify in connection.notifies(timeout=1.0, stop_after=1):
                            self._notified(notify.payload)
            except Exception as exc:
                # The error's type only: a connection error can quote the conninfo.
                logger.warning(
                    "lost the outbox LISTEN connection (%s); reconnecting in %s s",
                    type(exc).__name__,
                    RELISTEN_SECONDS,
                )
                self._stopping.wait(RELISTEN_SECONDS)
