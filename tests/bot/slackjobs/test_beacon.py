"""The web process's word on its Slack traffic to the job runners apart from it
(bot/slackjobs/beacon.py), and what a runner's `JobArrivals` makes of it: no job starts while a
web process says it is busy. No timing claims: each test holds the traffic open with events and
checks what has and has not run, with deadlines far from the waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.slackjobs import queue
from bot.slackjobs.beacon import TrafficBeacon
from bot.slackjobs.queue import NewJob, add_jobs
from bot.slackjobs.runner import YIELD_SECONDS, JobArrivals, JobRunner
from bot.web.work import SlackTraffic
from tests.conftest import _empty_postgres
from tests.handlers.slack_payloads import wait_for

LONG = 60.0  # a hold or a wait no test waits out
WALL = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def job(n: int) -> NewJob:
    payload = {"user": "U1", "value": n, "channel": "D1", "message_ts": "1.2", "workspace": None}
    return NewJob(kind="handover_ack", payload=payload, signature=f"{n:064x}", timestamp=None)


def test_busy_holds_the_jobs_until_the_same_web_process_says_quiet() -> None:
    arrivals = JobArrivals(quiet=0.0, hold=LONG)
    assert arrivals.wait_for_a_pause(until=time.monotonic()) is True
    arrivals.heard("busy web-1")
    arrivals.heard("busy web-2")
    assert arrivals.wait_for_a_pause(until=time.monotonic() + 0.05) is False
    arrivals.heard("quiet web-1")
    assert arrivals.wait_for_a_pause(until=time.monotonic() + 0.05) is False  # web-2 still busy
    arrivals.heard("quiet web-2")
    assert arrivals.wait_for_a_pause(until=time.monotonic()) is True


def test_a_waiting_runner_goes_on_as_soon_as_the_web_process_says_quiet() -> None:
    arrivals = JobArrivals(quiet=0.0, hold=LONG)
    arrivals.heard("busy web-1")
    paused: list[bool] = []
    waiting = threading.Thread(
        target=lambda: paused.append(arrivals.wait_for_a_pause(until=time.monotonic() + LONG))
    )
    waiting.start()
    time.sleep(0.05)
    assert paused == []
    arrivals.heard("quiet web-1")
    waiting.join(timeout=10)
    assert paused == [True]


def test_a_busy_that_is_not_repeated_lapses_after_the_hold() -> None:
    # A web process that died mid-burst (or lost its connection) holds the jobs no longer.
    arrivals = JobArrivals(quiet=0.0, hold=0.2)
    arrivals.heard("busy web-1")
    started = time.monotonic()
    assert arrivals.wait_for_a_pause(until=started + LONG) is True
    assert time.monotonic() - started >= 0.2


def test_any_other_payload_is_jobs_written_and_a_bare_word_is_no_sender() -> None:
    for payload in ("", "busy", "quiet", "something else"):
        arrivals = JobArrivals(quiet=LONG, hold=LONG)
        arrivals.heard(payload)  # an arrival: the quiet time starts again
        assert arrivals.wait_for_a_pause(until=time.monotonic() + 0.01) is False, payload


class RecordedTraffic:
    """Stands for SlackTraffic: records each wait for a pause (how far off its `until` was)."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def wait_for_a_pause(self, until: float, give_up=lambda: False) -> bool:
        self.log.append(("wait", round(until - time.monotonic())))
        return True

    def wake(self) -> None:
        pass


def test_each_job_waits_for_a_pause_at_most_yield_seconds_after_it_became_ready(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    # Each job claimed waits on its own (a pause mid-burst lets one job a thread through), and
    # only until YIELD_SECONDS after it became ready: a job ready 2 s ago waits 3 s at most, one
    # ready 10 s ago not at all.
    log: list[Any] = []
    with engine.begin() as connection:
        add_jobs(connection, [job(1)], now=WALL - timedelta(seconds=2))
        add_jobs(connection, [job(2)], now=WALL - timedelta(seconds=10))
        add_jobs(connection, [job(3)], now=WALL)
    runner = JobRunner(
        session_factory,
        {"handover_ack": lambda claimed: log.append(("ran", claimed.payload["value"]))},
        instance_id="r1",
        clock=FixedClock(WALL),
        wall_clock=FixedClock(WALL),
        traffic=RecordedTraffic(log),
    )
    assert runner.run_ready() == 3
    assert YIELD_SECONDS == 5.0
    assert log == [("wait", 3), ("ran", 1), ("wait", 0), ("ran", 2), ("wait", 5), ("ran", 3)]


@pytest.fixture
def pg_engine(pg_database_url: str) -> Iterator[Engine]:
    _empty_postgres(pg_database_url)
    engine = create_engine(pg_database_url)
    yield engine
    engine.dispose()


def listen(engine: Engine) -> psycopg.Connection:
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg.connect(url, autocommit=True)
    connection.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
    return connection


def heard(connection: psycopg.Connection, seconds: float) -> list[str]:
    return [n.payload for n in connection.notifies(timeout=seconds)]


def test_the_beacon_says_busy_while_requests_go_on_and_quiet_after(pg_engine: Engine) -> None:
    traffic = SlackTraffic(quiet=0.01)
    beacon = TrafficBeacon(pg_engine, traffic, sender="web-1")
    listener = listen(pg_engine)
    beacon.start()
    try:
        assert heard(listener, 0.3) == []  # no traffic, nothing said
        with traffic.serving():
            assert heard(listener, 2.0)[:2] == ["busy web-1", "busy web-1"]  # and repeated
        assert "quiet web-1" in heard(listener, 2.0)
        assert heard(listener, 0.3) == []
        with traffic.serving():
            pass
        assert heard(listener, 2.0) == ["busy web-1", "quiet web-1"]
    finally:
        beacon.stop()
        listener.close()


def test_the_beacon_says_quiet_when_it_stops_mid_burst(pg_engine: Engine) -> None:
    traffic = SlackTraffic(quiet=0.01)
    beacon = TrafficBeacon(pg_engine, traffic, sender="web-1")
    listener = listen(pg_engine)
    beacon.start()
    try:
        with traffic.serving():
            assert heard(listener, 2.0)[:1] == ["busy web-1"]
            beacon.stop()
            said = heard(listener, 1.0)
        assert said[-1:] == ["quiet web-1"]
    finally:
        beacon.stop()
        listener.close()


def test_the_beacon_is_off_on_sqlite(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'handover.db'}")
    beacon = TrafficBeacon(engine, SlackTraffic())
    assert beacon.enabled is False
    beacon.start()
    assert beacon._thread is None
    beacon.stop()


def test_a_runner_apart_from_the_web_process_starts_no_job_while_it_is_busy(
    pg_engine: Engine,
) -> None:
    # `handover dispatch` and `serve` on PostgreSQL: a job written while serve answers Slack's
    # requests waits until serve says they paused.
    factory = sessionmaker(pg_engine)
    done = threading.Event()
    runner = JobRunner(
        factory, {"handover_ack": lambda claimed: done.set()}, instance_id="worker",
        clock=FixedClock(WALL),
    )  # fmt: skip
    arrivals = runner._traffic
    assert isinstance(arrivals, JobArrivals)
    arrivals._hold = LONG  # only "quiet" ends the wait: no test waits out a lapse
    traffic = SlackTraffic(quiet=0.01)
    beacon = TrafficBeacon(pg_engine, traffic, sender="web-1")
    runner.start()
    beacon.start()
    serving = traffic.serving()
    try:
        serving.__enter__()
        wait_for(lambda: "web-1" in arrivals._busy, timeout=30)  # the runner hears the beacon
        with pg_engine.begin() as connection:
            add_jobs(connection, [job(1)], now=datetime.now(UTC))
        assert not done.wait(1.0)  # well within YIELD_SECONDS
        serving.__exit__(None, None, None)
        assert done.wait(30)
    finally:
        beacon.stop()
        runner.shutdown()
