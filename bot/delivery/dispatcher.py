"""The dispatcher: delivers the outbox exactly once, never dropping a row.

A pass first reads whether anything is to be done (`_look`: no write lock on SQLite, no row
lock on PostgreSQL, so an idle pass neither waits for a writer nor holds one up). Then it
settles rows cancelled under a claim whose holder died before saying whether it sent them
(`reconcile.Reconciler`), and claims a batch of due rows and puts each through the one delivery
path (`pipeline.RowPipeline`), batch after batch until nothing due is left. While a pass runs, a
heartbeat renews the short lease of every row this dispatcher holds (also while it waits for a
rate token), so a live dispatcher keeps its rows and a dead one's are taken over within a lease;
each row's claim is checked and renewed again, in one statement, immediately before its message
is sent (`send.find_or_send`), and nothing inside a send sleeps (a 429 goes back to the
outbox). The database is the only source of truth; `wakeups.Wakeups` only decides when to look,
and `wakeups.OutboxWatch` tells it when any process wrote rows.

Running in the background it also runs retention once a day (`run_retention`): at its start
when the day's run has not happened, then daily at RETENTION_TIME service time
(bot/services/retention.py, docs/security.md).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from slack_sdk import WebClient
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.channels import build_channels
from bot.channels.base import Channels
from bot.clock import Clock, SystemClock
from bot.db import reading
from bot.delivery import outbox
from bot.delivery.compose import Delivery, DeliveryContext
from bot.delivery.confirm import Posted
from bot.delivery.home import HomeRefreshes
from bot.delivery.kinds import Outcome
from bot.delivery.pacing import Pacer, tiers_for
from bot.delivery.pipeline import CredentialsHeld, RowPipeline
from bot.delivery.reads import warm_up, warm_up_writes
from bot.delivery.reconcile import Reconciler
from bot.delivery.results import DispatchStats, RowResult
from bot.delivery.wakeups import Daily, OutboxWatch, Wakeups
from bot.services.retention import RetentionReport, next_retention_at, run_retention_for_the_day
from bot.settings import Settings
from rota.calendar import load_bank_holidays

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 20
DEFAULT_LEASE = outbox.DEFAULT_LEASE
LEASE_RENEWAL = outbox.LEASE_RENEWAL


def new_instance_id() -> str:
    """hostname:pid:random, unique per dispatcher (fits OutboxMessage.claimed_by)."""
    host = socket.gethostname().split(".")[0][:30]
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


class Dispatcher:
    """Delivers due outbox rows: `run_once` for one pass, `start`/`shutdown` in the background."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        client: WebClient,
        clock: Clock,
        instance_id: str | None = None,
        *,
        interval_seconds: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        lease: timedelta = DEFAULT_LEASE,
        channels: Channels | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.clock = clock
        self.instance_id = instance_id or new_instance_id()
        self.interval_seconds = interval_seconds or settings.dispatch_interval_seconds
        self.batch_size = batch_size
        self.lease = lease
        # Slack calls wait for their rate tier's token, shared with every other dispatcher; a
        # 429 is shared too, and a delivery's goes back to the outbox (no sleep inside a send).
        # (`pacer`: one on a simulated clock, for tests.)
        self.pacer = pacer or Pacer(_engine_of(session_factory), tiers_for(settings))
        self.pacer.watch(client)
        self.channels = channels or build_channels(
            self.pacer.delivery_client(client),
            settings,
            clock=clock,
            session_factory=session_factory,
        )
        self.context = DeliveryContext(
            settings=settings,
            channels=self.channels,
            instance_id=self.instance_id,
            lease=lease,
            wall_clock=SystemClock(),
        )
        self.homes = HomeRefreshes(session_factory, settings, clock, self.pacer)
        self.rows = RowPipeline(
            self.context,
            session_factory,
            clock,
            on_delivered=self._after_delivery,
            pacer=self.pacer,
        )
        self.reconciler = Reconciler(
            self.context, session_factory, clock, self.pacer, on_delivered=self._after_delivery
        )
        self._stopping = threading.Event()
        self._pass_lock = threading.Lock()
        retention = Daily(
            run=self.run_retention,
            next_at=lambda after: next_retention_at(after, settings.timezone),
        )
        self._wakeups = Wakeups(
            self._scheduled_pass, self._next_due, clock, self._stopping, daily=retention
        )
        bind = session_factory.kw.get("bind")
        self._watch = OutboxWatch(bind, self.wake) if bind is not None else None

    # ----- one pass ------------------------------------------------------------------------

    def run_once(self) -> DispatchStats:
        """Deliver everything due now, batch by batch, until nothing due is left. With nothing
        to do, one read and no write: no write lock on SQLite, no row lock on PostgreSQL."""
        stats = DispatchStats()
        with self._pass_lock, self._keeping_claims():
            unsettled, due = self._look()
            if unsettled:
                # First, rows cancelled under a claim whose holder died before saying whether
                # it sent them (docs/timing.md, "Cancelled in a batch"): what recording one
                # queues (the card's redraw) goes out in this pass.
                for result in self.reconciler.settle():
                    stats.claimed += 1
                    stats.record(result)
                due = due or stats.claimed > 0
            if not due:
                logger.debug(
                    "dispatcher %s found nothing due (one read, nothing claimed)",
                    self.instance_id,
                    extra={"dispatcher": self.instance_id, "claimed": 0},
                )
            while due and not self._stopping.is_set():
                with self.session_factory.begin() as session:
                    claimed = outbox.claim_due(
                        session,
                        self.clock.now(),
                        instance_id=self.instance_id,
                        limit=self.batch_size,
                        lease=self.lease,
                    )
                    ids = [row.id for row in claimed]
                logger.debug(
                    "dispatcher %s claimed %d due rows",
                    self.instance_id,
                    len(ids),
                    extra={"dispatcher": self.instance_id, "claimed": len(ids)},
                )
                if not ids:
                    break  # PostgreSQL: another dispatcher holds what was due
                stats.claimed += len(ids)
                if not self._process_batch(ids, stats):
                    break
                # A full batch most likely leaves more due: claim again. After a short one,
                # only rows written meanwhile can be due: look first (a read).
                due = len(ids) == self.batch_size or self._any_due()
        return stats

    def _look(self) -> tuple[bool, bool]:
        """Whether rows cancelled under a dead holder's claim wait to be settled, and whether
        rows are due: one read (`db.reading`), locking nothing."""
        now = self.clock.now()
        with reading(self.session_factory) as session:
            return outbox.work_waiting(session, now)

    def _any_due(self) -> bool:
        with reading(self.session_factory) as session:
            return outbox.any_due(session, self.clock.now())

    def _process_batch(self, ids: list[int], stats: DispatchStats) -> bool:
        """A claimed batch: composed in one transaction, each row sent in turn, then every row
        posted confirmed in one transaction (also when the pass stops early). False when the
        pass must stop (stopping, credentials)."""
        composed = self.rows.compose_batch(ids)
        posted: list[Posted] = []
        try:
            for index, row_id in enumerate(ids):
                if self._stopping.is_set():
                    # Graceful stop: hand the rest back at once rather than at lease end.
                    self._hand_back(ids[index:], stats)
                    return False
                try:
                    outcome = self.rows.deliver(row_id, composed.get(row_id))
                except CredentialsHeld as held:
                    stats.record(held.result)
                    self._hand_back(ids[index + 1 :], stats)
                    return False
                if isinstance(outcome, Posted):
                    posted.append(outcome)
                elif outcome is not None:
                    stats.record(outcome)
            return True
        finally:
            for result in self.rows.confirm(posted):
                if result is not None:
                    stats.record(result)

    def process(self, row_id: int) -> DispatchStats:
        """One row this dispatcher has claimed, through the whole delivery path."""
        stats = DispatchStats(claimed=1)
        with self._keeping_claims():
            if self._stopping.is_set():
                self._hand_back([row_id], stats)
                return stats
            try:
                result = self.rows.process(row_id)
            except CredentialsHeld as held:
                result = held.result
            if result is not None:
                stats.record(result)
        return stats

    @contextmanager
    def _keeping_claims(self) -> Iterator[None]:
        """Renew our claims every LEASE_RENEWAL (at most a third of the lease) until the block
        ends: a row waiting its turn in the batch, or for a rate token, stays ours."""
        done = threading.Event()
        every = min(self.lease / 3, LEASE_RENEWAL).total_seconds()
        renewer = threading.Thread(
            target=self._renew_claims, args=(done, every), name="handover-lease", daemon=True
        )
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()

    def _renew_claims(self, done: threading.Event, every: float) -> None:
        while not done.wait(every):
            try:
                with self.session_factory.begin() as session:
                    now = self.clock.now()
                    outbox.renew_claims(
                        session, instance_id=self.instance_id, now=now, lease=self.lease
                    )
            except Exception:
                # The next renewal tries again; a row whose lease lapses meanwhile is checked
                # before it is sent, and confirmed only if it is still ours.
                logger.warning("could not renew the claims of %s", self.instance_id, exc_info=True)

    def _hand_back(self, row_ids: list[int], stats: DispatchStats) -> None:
        now = self.clock.now()
        with self.session_factory.begin() as session:
            for row_id in row_ids:
                row = outbox.defer(session, row_id, instance_id=self.instance_id, until=now)
                if row is not None:
                    stats.record(RowResult(row_id, row.kind, Outcome.DEFERRED))

    def _after_delivery(self, delivery: Delivery) -> None:
        self.homes.after_delivery(self.channels.named(delivery.channel), delivery)

    # ----- retention, once a day ----------------------------------------------------------

    def run_retention(self) -> RetentionReport | None:
        """The day's retention run, unless a dispatcher has run it already (then None)."""
        now = self.clock.now()
        try:
            with self.session_factory.begin() as session:
                report = run_retention_for_the_day(
                    session, now=now, settings=self.settings, ran_by=self.instance_id
                )
        except IntegrityError:
            # Another dispatcher claimed the same day at the same moment, and ran it.
            report = None
        if report is None:
            logger.debug("retention: the day's run has already happened")
            return None
        cutoff = report.before.isoformat() if report.before else "none (no retention period)"
        logger.info(
            "retention run by %s: purged %d referral(s) closed before %s; pruned %d Slack "
            "event id(s) and %d Slack request signature(s)",
            self.instance_id,
            len(report.referrals),
            cutoff,
            report.slack_events,
            report.slack_requests,
        )
        return report

    # ----- running in the background -------------------------------------------------------

    def start(self) -> None:
        """Run passes in a background scheduler: at the next due time and every interval."""
        self._stopping.clear()
        # Before the first pass, so that the first prompt due does not load them at its instant.
        load_bank_holidays()
        self.warm_up()
        self.homes.start()
        self._wakeups.start(self.interval_seconds)
        if self._watch is not None:
            self._watch.start()
        logger.info(
            "dispatcher %s started (woken by %s; safety pass every %s s)",
            self.instance_id,
            self._watch.mechanism if self._watch is not None else None,
            self.interval_seconds,
        )

    def warm_up(self) -> None:
        """Compile the statements a batch runs before its first message is sent, before any
        row is due (`reads.warm_up`, `reads.warm_up_writes`, `Pacer.warm_up`)."""
        now = self.clock.now()
        try:
            with reading(self.session_factory) as session:
                warm_up(session, now, tz=self.settings.timezone, instance_id=self.instance_id)
                # While this session keeps its connection the pacer takes a second, as a
                # batch's sends do: the pool opens it now rather than at the first instant due.
                self.pacer.warm_up()
            # Writes of no row, rolled back: on SQLite BEGIN IMMEDIATE holds the write lock
            # while they compile (a few milliseconds, once); on PostgreSQL no row is locked.
            with self.session_factory() as session:
                try:
                    warm_up_writes(session, now, instance_id=self.instance_id)
                finally:
                    session.rollback()
        except Exception as exc:
            # Only a cost deferred: the first batch compiles them. The error's type only: a
            # connection error can quote the database URL.
            logger.warning("could not warm up the dispatcher (%s)", type(exc).__name__)

    def wake(self) -> None:
        """Ask for a pass now (new rows were written; the outbox watch calls this too)."""
        self._wakeups.wake()

    def shutdown(self) -> None:
        """Stop after the current row; wait for the running pass to end."""
        self._stopping.set()
        self.homes.stop()
        if self._watch is not None:
            self._watch.stop()
        if self._wakeups.stop():
            logger.info("dispatcher %s stopped", self.instance_id)

    def _scheduled_pass(self) -> None:
        stats = self.run_once()
        if stats.claimed:
            logger.info(
                "%s", stats.summary(), extra={"dispatcher": self.instance_id, **stats.fields()}
            )

    def _next_due(self) -> datetime | None:
        """When to wake next: a read (`db.reading`), no write lock on SQLite."""
        with reading(self.session_factory) as session:
            return outbox.next_due_at(session)


def _engine_of(session_factory: sessionmaker[Session]) -> Engine:
    bind = session_factory.kw.get("bind")
    assert isinstance(bind, Engine), "the dispatcher's sessions are bound to one engine"
    return bind
