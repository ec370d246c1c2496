"""Runs the slack_jobs table: whoever runs the dispatcher runs these too (`handover dispatch`,
or `serve` with its dispatcher in-process).

A few threads each claim a small batch of ready jobs, run each through the work registered for
its kind (the claimed job in, Slack and the database changed), and mark it done, then do
what the work left for after that (a slash command's answer: at most once). A job that
raises is handed back, to be claimed again after its backoff (queue.BACKOFF); after its last
attempt it is dropped, logged and recorded in the audit log as `slack_job_dropped`
(docs/operations.md), and its user is to be told: the drop writes, in its own transaction, the
job that tells them (`dropped_notice` makes it: a DM saying their click or command was not
carried out, handlers/dropped_jobs.py). So a runner that dies before that commit leaves the job
to be claimed, tried and dropped again (its notice written then), and one that dies after it
leaves the notice waiting for any runner; a notice that Slack refuses for now is tried again
like any job, and one dropped itself makes no notice of its own. A work that no later attempt
could help raises `GiveUp`: the job is dropped at once, the same way, with the reason in the log
line, but with no notice; such a work tells its user itself.

The runners are woken as the outbox's dispatchers are (bot/delivery/wakeups.py): a NOTIFY on
PostgreSQL, a change of the SQLite file's data_version, or directly by a writer in the same
process; between wake-ups they look again at the next retry or lease end, or every
SAFETY_SECONDS. The work makes way for Slack's requests, as the in-memory queue's does
(bot/web/work.py): each job claimed starts in a pause of them, or YIELD_SECONDS after it became
ready, whichever is first, so a burst of clicks is answered before the work it started takes the
cores. Under `serve` the pause is its own SlackTraffic's. In a process apart from the web's
(`handover dispatch`) it is `JobArrivals`': the web processes say when their Slack requests
begin and pause (bot/slackjobs/beacon.py), on the jobs' channel on PostgreSQL, where the jobs'
own writing counts as traffic too, and in files beside the database file on SQLite
(bot/slackjobs/traffic_files.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock, SystemClock
from bot.delivery.pacing import waits_until
from bot.delivery.wakeups import OutboxWatch
from bot.services import audit
from bot.slackjobs import queue
from bot.slackjobs.queue import ClaimedJob, NewJob
from bot.slackjobs.traffic_files import LOOK_SECONDS, TrafficFiles

logger = logging.getLogger(__name__)

# A job's work: the claimed job in; out, what to do once the job is marked done (a slash
# command's answer), or None. That is done only when this runner still held the job, so at most
# once, never by a runner whose lease ended meanwhile.
JobWork = Callable[[ClaimedJob], Callable[[], None] | None]
# The job that tells a job's user it was dropped after its last attempt, written with the drop
# (handlers/dropped_jobs.py); None when there is nobody to tell, or the job was such a notice.
DroppedNotice = Callable[[ClaimedJob], NewJob | None]

WORKERS = 4
SQLITE_WORKERS = 2  # SQLite takes one writer at a time: more threads only queue on its lock
BATCH = 4  # jobs a thread claims at once
LEASE_MARGIN_SECONDS = 20.0  # of a batch's lease, left for its last job to finish in
SAFETY_SECONDS = 5.0  # the longest a runner goes without looking, whatever it was told
YIELD_SECONDS = 5.0  # the longest a job waits for a pause in Slack's traffic once it is ready
ERROR_PAUSE_SECONDS = 1.0  # after the table itself could not be read or written
# In `handover dispatch`: no job written for this long is a pause in a burst of clicks (the web
# process's writer gathers a burst's jobs for 20 ms a batch, so batches come closer than this).
ARRIVALS_QUIET_SECONDS = 0.1
# A web process's "busy" holds the jobs this long unless it says "quiet" first; it says "busy"
# again every beacon.HEARTBEAT_SECONDS while its requests go on, so only a web process that died
# mid-burst (or a lost connection) leaves the jobs to wait this long.
BUSY_HOLD_SECONDS = 1.0
BUSY = "busy"  # the NOTIFY payloads a web process sends (bot/slackjobs/beacon.py): "busy <id>"
QUIET = "quiet"


class UnknownJobKind(Exception):
    """A job of a kind this version has no work for (written by another version)."""


class GiveUp(Exception):
    """Raised by a job's work when no later attempt could do it (a slash command's response_url
    has expired, say): the job is dropped at once, its message in the log line. The subclass's
    name is the row's `last_error` and the audit event's `error`."""


class JobArrivals:
    """Slack's traffic as a runner apart from the web processes hears it on the jobs' NOTIFY
    channel, or reads it in their `files` on SQLite; its stand-in for `serve`'s SlackTraffic
    (the same `wait_for_a_pause`).

    A pause is when no web process has said it is busy (or its word has lapsed after
    `hold`), and no job has been written for the `quiet` time."""

    def __init__(
        self,
        quiet: float = ARRIVALS_QUIET_SECONDS,
        hold: float = BUSY_HOLD_SECONDS,
        files: TrafficFiles | None = None,
    ) -> None:
        self._quiet = quiet
        self._hold = hold
        self._files = files
        self._changed = threading.Condition()
        self._last = float("-inf")
        self._busy: dict[str, float] = {}  # web process -> when its "busy" lapses (monotonic)

    def arrived(self) -> None:
        """Jobs were just written."""
        with self._changed:
            self._last = time.monotonic()

    def heard(self, payload: str) -> None:
        """A NOTIFY on the jobs' channel: "busy ID" or "quiet ID" from web process ID
        (bot/slackjobs/beacon.py); anything else is jobs written (queue.add_jobs)."""
        word, _, sender = payload.partition(" ")
        if word == BUSY and sender:
            with self._changed:
                self._busy[sender] = time.monotonic() + self._hold
        elif word == QUIET and sender:
            with self._changed:
                self._busy.pop(sender, None)
                self._changed.notify_all()
        else:
            self.arrived()

    def wait_for_a_pause(self, until: float, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Wait until no web process is busy and no job has been written for the quiet time
        (True), or until the monotonic instant `until` or `give_up()` after a `wake` (False)."""
        with self._changed:
            while True:
                now = time.monotonic()
                if self._files is not None:
                    self._busy = self._busy_in(self._files, now)
                for sender, lapses in list(self._busy.items()):
                    if lapses <= now:
                        del self._busy[sender]
                resume = max(self._last + self._quiet, *self._busy.values(), now)
                if resume <= now:
                    return True
                if now >= until or give_up():
                    return False
                if self._files is not None:
                    # A file removed ("quiet") tells no one: look again shortly.
                    resume = min(resume, now + LOOK_SECONDS)
                self._changed.wait(min(until, resume) - now)

    def _busy_in(self, files: TrafficFiles, now: float) -> dict[str, float]:
        """Each web process with a file: its "busy" lapses `hold` after its last heartbeat (a
        heartbeat on the wall clock, a lapse on the monotonic one, as `_busy` keeps them)."""
        wall = time.time()
        return {
            sender: now + self._hold - max(0.0, wall - beat)
            for sender, beat in files.heartbeats().items()
        }

    def wake(self) -> None:
        """Have those waiting for a pause ask `give_up` again."""
        with self._changed:
            self._changed.notify_all()


class JobRunner:
    """Claims and runs ready jobs: `run_ready` for one claim, `start`/`shutdown` in threads."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        work: Mapping[str, JobWork],
        *,
        instance_id: str,
        clock: Clock,
        wall_clock: Clock | None = None,
        workers: int | None = None,
        batch: int = BATCH,
        lease: timedelta = queue.DEFAULT_LEASE,
        backoff: tuple[timedelta, ...] = queue.BACKOFF,
        traffic: Any = None,
        dropped_notice: DroppedNotice | None = None,
    ) -> None:
        self._factory = session_factory
        self._work = dict(work)
        self._dropped_notice = dropped_notice
        self.instance_id = instance_id
        self._clock = clock  # the service's: the audit event's instant
        self._wall = wall_clock or SystemClock()  # the table's: leases and retries
        engine = session_factory.kw.get("bind")
        sqlite = isinstance(engine, Engine) and engine.dialect.name == "sqlite"
        self._workers = workers or (SQLITE_WORKERS if sqlite else WORKERS)
        self._batch = batch
        self._lease = lease
        self._backoff = backoff
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch = (
            _job_watch(engine, self.wake, self._heard) if isinstance(engine, Engine) else None
        )
        self._arrivals: JobArrivals | None = None
        if traffic is None and self._watch is not None and self._watch.mechanism == "listen":
            # Apart from the web process, on PostgreSQL: the web processes NOTIFY their traffic
            # and their writers each batch of clicks written.
            self._arrivals = traffic = JobArrivals()
        elif traffic is None and self._watch is not None and self._watch.mechanism is not None:
            # Apart from the web process, on an SQLite file: the web processes' traffic files.
            # (The file's data_version moves with this runner's own writes too, so it cannot
            # say when the clicks' jobs were written.)
            traffic = JobArrivals(files=TrafficFiles.beside(engine.url))
        self._traffic = traffic

    # ----- one claim -----------------------------------------------------------------------

    def run_ready(self) -> int:
        """Claim up to a batch of ready jobs and run each, each in a pause of Slack's traffic
        (at most YIELD_SECONDS after it became ready); how many were claimed."""
        # The jobs' paced Slack calls stop waiting before the leases end (a margin to finish):
        # waiting on, a job could be claimed again by another runner and done twice.
        stop_waiting = time.monotonic() + self._lease.total_seconds() - LEASE_MARGIN_SECONDS
        with self._factory.begin() as session:
            claimed = queue.claim_ready(
                session,
                self._wall.now(),
                instance_id=self.instance_id,
                limit=self._batch,
                lease=self._lease,
            )
        for job in claimed:
            self._make_way(job)
            with waits_until(stop_waiting):
                self._run(job)
        return len(claimed)

    def _make_way(self, job: ClaimedJob) -> None:
        """Wait for a pause in Slack's traffic before `job`, at most until YIELD_SECONDS after
        it became ready (or a `shutdown`, which runs the jobs in hand at once). Each job waits
        on its own, so a pause mid-burst lets only one job a thread through."""
        if self._traffic is None:
            return
        left = YIELD_SECONDS - (self._wall.now() - job.ready_at).total_seconds()
        self._traffic.wait_for_a_pause(
            until=time.monotonic() + min(YIELD_SECONDS, max(0.0, left)),
            give_up=self._stopping.is_set,
        )

    def _run(self, job: ClaimedJob) -> None:
        try:
            work = self._work.get(job.kind)
            if work is None:
                raise UnknownJobKind(job.kind)
            afterwards = work(job)
        except GiveUp as exc:
            self._drop(job, type(exc).__name__, because=str(exc))
            return
        except Exception as exc:
            logger.exception(
                "slack job %s (%s) failed, attempt %d", job.id, job.kind, job.attempts,
                extra={"job": job.id, "kind": job.kind, "attempts": job.attempts},
            )  # fmt: skip
            self._failed(job, type(exc).__name__)
            return
        with self._factory.begin() as session:
            finished = queue.finish(
                session, job.id, instance_id=self.instance_id, now=self._wall.now(),
                payload=job.payload,
            )  # fmt: skip
        if not finished:
            logger.warning("slack job %s was done after its lease ended", job.id)
            return
        if afterwards is not None:
            try:
                afterwards()
            except Exception:
                logger.exception("slack job %s (%s): what followed it failed", job.id, job.kind)

    def _failed(self, job: ClaimedJob, error: str) -> None:
        if job.attempts > len(self._backoff):
            self._drop(job, error, because=f"after {job.attempts} attempts ({error})", notify=True)
            return
        with self._factory.begin() as session:
            queue.retry_later(
                session,
                job.id,
                instance_id=self.instance_id,
                ready_at=self._wall.now() + self._backoff[job.attempts - 1],
                error=error,
            )

    def _drop(self, job: ClaimedJob, error: str, *, because: str, notify: bool = False) -> None:
        """Give the job up, its private part erased, record slack_job_dropped and, to `notify`
        its user, write its notice's job, all in one transaction; nothing when this runner no
        longer held it (another does, and drops or does it)."""
        with self._factory.begin() as session:
            now = self._wall.now()
            if not queue.drop(
                session, job.id, instance_id=self.instance_id, now=now, error=error,
                payload=job.payload,
            ):  # fmt: skip
                return
            detail = {"job": job.id, "kind": job.kind, "attempts": job.attempts, "error": error}
            audit.record(session, "slack_job_dropped", at=self._clock.now(), detail=detail)
            notice = self._dropped_notice(job) if notify and self._dropped_notice else None
            if notice is not None:
                queue.add_jobs(session.connection(), [notice], now=now)
        logger.error(
            "slack job %s (%s) dropped %s", job.id, job.kind, because,
            extra={"event": "slack_job_dropped", **detail},
        )  # fmt: skip

    # ----- in the background ---------------------------------------------------------------

    def start(self) -> None:
        """Run jobs on `workers` threads until `shutdown`, woken by the watch and `wake`."""
        if self._threads:
            return
        self._stopping.clear()
        for index in range(self._workers):
            thread = threading.Thread(
                target=self._serve, name=f"handover-slack-jobs-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self._watch is not None:
            self._watch.start()
        logger.info(
            "slack job runner %s started (%d threads)",
            self.instance_id,
            self._workers,
            extra={"dispatcher": self.instance_id},
        )

    def wake(self) -> None:
        """Look for ready jobs now (new jobs were written)."""
        self._woken.set()

    def _heard(self, payload: str) -> None:
        # The watch: jobs written by another process, or a web process's traffic.
        if self._arrivals is not None:
            self._arrivals.heard(payload)
        if not payload.startswith((BUSY + " ", QUIET + " ")):
            self.wake()

    def shutdown(self, wait: bool = True) -> None:
        """Stop claiming; with `wait`, let the jobs in hand finish (each is done or, if the
        process dies first, claimed again when its lease ends)."""
        self._stopping.set()
        self._woken.set()
        if self._traffic is not None:
            self._traffic.wake()
        if self._watch is not None:
            self._watch.stop()
        threads, self._threads = self._threads, []
        if wait:
            for thread in threads:
                thread.join()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._woken.clear()
            try:
                if self.run_ready():
                    continue
                wait = self._idle_wait()
            except Exception:
                logger.exception("slack jobs: could not claim; looking again shortly")
                wait = ERROR_PAUSE_SECONDS
            self._woken.wait(wait)

    def _idle_wait(self) -> float:
        """Seconds until the next retry or lease end, at most SAFETY_SECONDS."""
        with self._factory() as session:
            ready_at = queue.next_ready_at(session)
        if ready_at is None:
            return SAFETY_SECONDS
        return min(SAFETY_SECONDS, max(0.0, (ready_at - self._wall.now()).total_seconds()))


def _job_watch(
    engine: Engine, on_change: Callable[[], None], on_notify: Callable[[str], None]
) -> OutboxWatch:
    return OutboxWatch(
        engine, on_change, channel=queue.NOTIFY_CHANNEL, name="slack-jobs", on_notify=on_notify
    )
