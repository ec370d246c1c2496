"""Retention runs by itself: the dispatcher runs it at its start when the day's run has not
happened, then every day at 03:00 service time, once a day however many dispatchers run and
however often they restart (SQLite and PostgreSQL; docs/security.md §7)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.delivery.dispatcher import Dispatcher
from bot.delivery.wakeups import Daily, Wakeups
from bot.models import AuditEvent, Referral, RetentionRun, SlackEvent
from bot.services import retention
from bot.services.retention import (
    EVENT_ID_RETENTION,
    next_retention_at,
    retention_day,
)
from bot.settings import Settings
from tests.bot.services.test_retention import LONDON, add_referral, close
from tests.handlers.slack_payloads import build_rota

# Monday 16 November 2026, 03:00 GMT: the day's run.
RUN_AT = datetime(2026, 11, 16, 3, 0, tzinfo=UTC)
NEXT_RUN_AT = datetime(2026, 11, 17, 3, 0, tzinfo=UTC)
SETTINGS = Settings(edt_channel="C0EDTCARDS", retention_days=30)
UNUSED_SLACK = WebClient(base_url="http://127.0.0.1:9/", token="xoxb-unused")


def dispatcher(factory: sessionmaker[Session], clock: FixedClock, name: str) -> Dispatcher:
    return Dispatcher(SETTINGS, factory, UNUSED_SLACK, clock, instance_id=name)


def closed_referrals(factory: sessionmaker[Session]) -> dict[str, str]:
    """DUE: closed more than 30 days before RUN_AT. NEXT: 30 days before RUN_AT plus 12 hours,
    so only the next day's run may purge it. OPEN: never closed."""
    with factory.begin() as session:
        build_rota(session)
    received = RUN_AT - timedelta(days=60)
    ids = {name: add_referral(factory, name, received=received) for name in ("DUE", "NEXT", "OPEN")}
    close(factory, ids["DUE"], "DUE", RUN_AT - timedelta(days=30, milliseconds=1))
    close(factory, ids["NEXT"], "NEXT", RUN_AT - timedelta(days=30) + timedelta(hours=12))
    return ids


def purged_at(factory: sessionmaker[Session]) -> dict[str, datetime | None]:
    with factory() as session:
        return {r.external_ref[4:]: r.purged_at for r in session.scalars(select(Referral))}


def runs(factory: sessionmaker[Session]) -> list[tuple[date, datetime, str, int]]:
    with factory() as session:
        return [
            (r.day, r.ran_at, r.ran_by, r.referrals_purged)
            for r in session.scalars(select(RetentionRun).order_by(RetentionRun.day))
        ]


def purge_events(factory: sessionmaker[Session]) -> list[tuple[str, datetime, str]]:
    with factory() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "referral_purged").order_by(AuditEvent.id)
        )
        return [(e.referral_id, e.at, json.loads(e.detail)["closed_before"]) for e in events]


# ----- when -----------------------------------------------------------------------------------


def test_the_daily_run_is_at_0300_service_time_across_the_clock_changes() -> None:
    # Winter: 03:00 GMT is 03:00 UTC; an instant exactly at a run time is followed by the next.
    assert next_retention_at(datetime(2026, 11, 16, 2, 59, tzinfo=UTC), LONDON) == RUN_AT
    assert next_retention_at(RUN_AT, LONDON) == NEXT_RUN_AT
    # Summer: 03:00 BST is 02:00 UTC.
    assert next_retention_at(datetime(2026, 7, 1, 12, tzinfo=UTC), LONDON) == datetime(
        2026, 7, 2, 2, 0, tzinfo=UTC
    )
    # Clocks go forward at 01:00 UTC on 29 March 2026: that day's 03:00 is BST.
    assert next_retention_at(datetime(2026, 3, 28, 12, tzinfo=UTC), LONDON) == datetime(
        2026, 3, 29, 2, 0, tzinfo=UTC
    )
    # Clocks go back at 01:00 UTC on 25 October 2026: that day's 03:00 is GMT.
    assert next_retention_at(datetime(2026, 10, 24, 12, tzinfo=UTC), LONDON) == datetime(
        2026, 10, 25, 3, 0, tzinfo=UTC
    )
    # Up to 02:59:59 a run counts for the day before.
    assert retention_day(RUN_AT - timedelta(microseconds=1), LONDON) == date(2026, 11, 15)
    assert retention_day(RUN_AT, LONDON) == date(2026, 11, 16)
    assert retention_day(NEXT_RUN_AT - timedelta(seconds=1), LONDON) == date(2026, 11, 16)


# ----- once a day -----------------------------------------------------------------------------


def test_once_a_day_across_dispatchers_and_restarts(
    session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    ids = closed_referrals(session_factory)
    with session_factory.begin() as session:
        session.add(
            SlackEvent(
                event_id="Ev-old", received_at=RUN_AT - EVENT_ID_RETENTION - timedelta(minutes=1)
            )
        )
        session.add(SlackEvent(event_id="Ev-new", received_at=RUN_AT - timedelta(minutes=5)))
    clock = FixedClock(RUN_AT)
    first, second = (
        dispatcher(session_factory, clock, "d1"),
        dispatcher(session_factory, clock, "d2"),
    )

    caplog.set_level("INFO", logger="bot.delivery.dispatcher")
    report = first.run_retention()
    assert report is not None and [p.referral_id for p in report.referrals] == [ids["DUE"]]
    assert (report.slack_events, report.before) == (1, RUN_AT - timedelta(days=30))
    assert purged_at(session_factory) == {"DUE": RUN_AT, "NEXT": None, "OPEN": None}
    assert purge_events(session_factory) == [
        (ids["DUE"], RUN_AT, (RUN_AT - timedelta(days=30)).isoformat())
    ]
    assert runs(session_factory) == [(date(2026, 11, 16), RUN_AT, "d1", 1)]
    with session_factory() as session:
        assert list(session.scalars(select(SlackEvent.event_id))) == ["Ev-new"]
    assert (
        "retention run by d1: purged 1 referral(s) closed before 2026-10-17T03:00:00+00:00; "
        "pruned 1 Slack event id(s) and 0 Slack request signature(s)"
    ) in caplog.messages

    # Another dispatcher the same day, and the first again just before the next day's run:
    # NEXT is past the cut-off by then, but the day has had its run.
    assert second.run_retention() is None
    clock.set(NEXT_RUN_AT - timedelta(seconds=1))
    assert first.run_retention() is None
    assert purged_at(session_factory)["NEXT"] is None

    # A dispatcher started afresh (a restart) at the next day's run time runs it.
    clock.set(NEXT_RUN_AT)
    restarted = dispatcher(session_factory, clock, "d1-restarted")
    assert [p.referral_id for p in restarted.run_retention().referrals] == [ids["NEXT"]]
    assert purged_at(session_factory) == {"DUE": RUN_AT, "NEXT": NEXT_RUN_AT, "OPEN": None}
    assert runs(session_factory) == [
        (date(2026, 11, 16), RUN_AT, "d1", 1),
        (date(2026, 11, 17), NEXT_RUN_AT, "d1-restarted", 1),
    ]
    assert [e[0] for e in purge_events(session_factory)] == [ids["DUE"], ids["NEXT"]]


def test_without_a_retention_period_the_daily_run_only_prunes(
    session_factory: sessionmaker[Session],
) -> None:
    closed_referrals(session_factory)
    settings = Settings(edt_channel="C0EDTCARDS")
    clock = FixedClock(RUN_AT)
    report = Dispatcher(settings, session_factory, UNUSED_SLACK, clock, instance_id="d1")
    assert report.run_retention().referrals == []
    assert purged_at(session_factory) == {"DUE": None, "NEXT": None, "OPEN": None}
    assert runs(session_factory) == [(date(2026, 11, 16), RUN_AT, "d1", 0)]


def test_two_dispatchers_at_the_same_instant_purge_once(
    session_factory: sessionmaker[Session],
) -> None:
    ids = closed_referrals(session_factory)
    clock = FixedClock(RUN_AT)
    dispatchers = [dispatcher(session_factory, clock, f"d{n}") for n in range(4)]
    start = threading.Barrier(len(dispatchers))
    reports: list[object] = []

    def run(d: Dispatcher) -> None:
        start.wait()
        reports.append(d.run_retention())

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ran = [r for r in reports if r is not None]
    assert len(reports) == 4 and len(ran) == 1
    assert [e[0] for e in purge_events(session_factory)] == [ids["DUE"]]
    assert [(day, at, n) for day, at, _by, n in runs(session_factory)] == [
        (date(2026, 11, 16), RUN_AT, 1)
    ]


def test_a_failed_run_leaves_the_day_to_run_again(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = closed_referrals(session_factory)
    clock = FixedClock(RUN_AT)
    d1 = dispatcher(session_factory, clock, "d1")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database went away mid-run")

    with monkeypatch.context() as patch:
        patch.setattr(retention, "run_daily_retention", broken)
        with pytest.raises(RuntimeError):
            d1.run_retention()
    assert runs(session_factory) == [] and purge_events(session_factory) == []
    clock.set(RUN_AT + timedelta(minutes=1))
    assert [p.referral_id for p in d1.run_retention().referrals] == [ids["DUE"]]
    assert runs(session_factory) == [(date(2026, 11, 16), RUN_AT + timedelta(minutes=1), "d1", 1)]


# ----- on the dispatcher's scheduler ----------------------------------------------------------


def wait_until(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out waiting for the dispatcher"
        time.sleep(0.02)
    return value


def test_the_running_dispatcher_runs_it_at_start_then_at_0300(
    session_factory: sessionmaker[Session],
) -> None:
    ids = closed_referrals(session_factory)
    # Started at 02:59:59.5: the day before has had no run, so one runs at start.
    started = RUN_AT - timedelta(milliseconds=500)
    clock = FixedClock(started)
    d1 = dispatcher(session_factory, clock, "d1")
    d1.start()
    try:
        wait_until(lambda: runs(session_factory))
        assert runs(session_factory) == [(date(2026, 11, 15), started, "d1", 0)]
        assert purged_at(session_factory)["DUE"] is None  # not yet 30 days closed at start
        # The scheduler waits half a second of its own; our clock says when 03:00 is.
        clock.set(RUN_AT)
        wait_until(lambda: len(runs(session_factory)) == 2)
    finally:
        d1.shutdown()
    assert runs(session_factory)[1] == (date(2026, 11, 16), RUN_AT, "d1", 1)
    assert purged_at(session_factory) == {"DUE": RUN_AT, "NEXT": None, "OPEN": None}
    assert purge_events(session_factory) == [
        (ids["DUE"], RUN_AT, (RUN_AT - timedelta(days=30)).isoformat())
    ]


def test_a_failing_daily_job_is_logged_and_runs_again_at_its_next_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = RUN_AT - timedelta(milliseconds=300)
    clock = FixedClock(started)
    ran: list[datetime] = []

    def run() -> None:
        ran.append(clock.now())
        if len(ran) == 1:
            raise RuntimeError("the database went away")

    daily = Daily(run=run, next_at=lambda after: next_retention_at(after, LONDON))
    wakeups = Wakeups(lambda: None, lambda: None, clock, threading.Event(), daily=daily)
    wakeups.start(interval_seconds=3600)
    try:
        wait_until(lambda: ran)
        clock.set(RUN_AT)
        wait_until(lambda: len(ran) == 2)
    finally:
        wakeups.stop()
    assert ran == [started, RUN_AT]
    [failure] = [r for r in caplog.records if r.message.startswith("the daily job failed")]
    assert failure.exc_info is not None and "the database went away" in str(failure.exc_info[1])


def test_stopping_while_a_job_adds_its_next_one_does_not_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # APScheduler's shutdown(wait=True) holds its job stores' lock while it waits for the
    # running jobs; a job adding its next run then waited for that lock for ever (a CI run hung
    # so, here). Now stop() begins only once the job has added it.
    release = threading.Event()
    armed = threading.Event()
    stopped = threading.Event()
    daily = Daily(run=release.wait, next_at=lambda after: after + timedelta(days=1))
    wakeups = Wakeups(lambda: None, lambda: None, FixedClock(RUN_AT), threading.Event(), daily)
    real_add_job = BackgroundScheduler.add_job

    def stop_begins_as_the_job_adds_its_next(scheduler, *args, **kwargs):
        if armed.is_set():
            armed.clear()

            def stop() -> None:
                wakeups.stop()
                stopped.set()

            threading.Thread(target=stop, daemon=True).start()
            time.sleep(0.5)  # stop() has begun: its shutdown would now wait for this job
        return real_add_job(scheduler, *args, **kwargs)

    monkeypatch.setattr(BackgroundScheduler, "add_job", stop_begins_as_the_job_adds_its_next)
    wakeups.start(interval_seconds=3600)
    armed.set()
    release.set()  # the daily run ends and adds its next run
    assert stopped.wait(10), "stop() hung while a job added its next run"


def test_a_run_at_start_that_ends_after_0300_does_not_skip_that_days_run() -> None:
    # Started at 02:59:59; the run owed for the day before takes until 03:00:01. The 03:00 run
    # is then owed at once, not tomorrow (it was planned from the end of the run before).
    started = RUN_AT - timedelta(seconds=1)
    clock = FixedClock(started)
    ran: list[datetime] = []

    def run() -> None:
        ran.append(clock.now())
        if len(ran) == 1:
            clock.set(RUN_AT + timedelta(seconds=1))

    daily = Daily(run=run, next_at=lambda after: next_retention_at(after, LONDON))
    wakeups = Wakeups(lambda: None, lambda: None, clock, threading.Event(), daily=daily)
    wakeups.start(interval_seconds=3600)
    try:
        wait_until(lambda: len(ran) == 2)
    finally:
        wakeups.stop()
    assert ran == [started, RUN_AT + timedelta(seconds=1)]
