"""The web process's word on its Slack traffic to the job runners apart from it
(bot/slackjobs/beacon.py), and what a runner's `JobArrivals` makes of it: no job starts while a
web process says it is busy. No timing claims: each test holds the traffic open with events and
checks what has and has not run, with deadlines far from the waits."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.db import create_db_engine
from bot.slackjobs import queue
from bot.slackjobs.beacon import TrafficBeacon
from bot.slackjobs.queue import NewJob, add_jobs
from bot.slackjobs.runner import BUSY_HOLD_SECONDS, YIELD_SECONDS, JobArrivals, JobRunner
from bot.slackjobs.traffic_files import TrafficFiles
from bot.web.work import SlackTraffic
from tests.conftest import _empty_postgres
from tests.handlers.slack_payloads import wait_for

ROOT = Path(__file__).resolve().parents[3]
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


def test_the_beacon_is_off_on_an_in_memory_sqlite() -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        beacon = TrafficBeacon(create_engine(url), SlackTraffic())
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


# ----- SQLite: the same word in a file beside the database file ------------------------------


@pytest.fixture
def sqlite_engine(sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    path = tmp_path / "handover.db"
    shutil.copyfile(sqlite_template, path)
    engine = create_db_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def files_of(engine: Engine) -> TrafficFiles:
    files = TrafficFiles.beside(engine.url)
    assert files is not None
    return files


def test_a_busy_file_holds_the_jobs_until_it_is_removed(tmp_path: Path) -> None:
    files = TrafficFiles(tmp_path / "handover.db.traffic")
    arrivals = JobArrivals(quiet=0.0, hold=LONG, files=files)
    assert arrivals.wait_for_a_pause(until=time.monotonic()) is True
    files.busy("web-1")
    paused: list[bool] = []
    waiting = threading.Thread(
        target=lambda: paused.append(arrivals.wait_for_a_pause(until=time.monotonic() + LONG))
    )
    waiting.start()
    time.sleep(0.2)
    assert paused == []
    files.quiet("web-1")
    waiting.join(timeout=10)
    assert paused == [True]


def test_a_busy_file_not_touched_again_lapses_after_the_hold(tmp_path: Path) -> None:
    files = TrafficFiles(tmp_path / "handover.db.traffic")
    files.busy("stale")
    old = time.time() - 10
    os.utime(files.directory / "stale", (old, old))  # left by a process killed long ago
    assert JobArrivals(quiet=0.0, hold=1.0, files=files).wait_for_a_pause(until=0.0) is True
    files.busy("web-1")
    arrivals = JobArrivals(quiet=0.0, hold=0.2, files=files)
    started = time.monotonic()
    assert arrivals.wait_for_a_pause(until=started + LONG) is True
    assert time.monotonic() - started >= 0.15  # the file's mtime, taken a moment before


def test_the_beacon_keeps_its_file_while_requests_go_on_and_removes_it_after(
    sqlite_engine: Engine,
) -> None:
    traffic = SlackTraffic(quiet=0.01)
    beacon = TrafficBeacon(sqlite_engine, traffic, sender="web-1")
    files = files_of(sqlite_engine)
    assert beacon.enabled is True
    beacon.start()
    try:
        time.sleep(0.1)
        assert files.heartbeats() == {}  # no traffic, nothing written
        with traffic.serving():
            first = wait_for(lambda: files.heartbeats().get("web-1"))
            wait_for(lambda: files.heartbeats().get("web-1", first) > first)  # a heartbeat
        wait_for(lambda: files.heartbeats() == {})
        with traffic.serving():
            wait_for(lambda: "web-1" in files.heartbeats())
            beacon.stop()  # mid-burst
            assert not files.directory.exists()  # nothing left behind
    finally:
        beacon.stop()


def test_a_runner_apart_from_the_web_process_on_sqlite_starts_no_job_while_it_is_busy(
    sqlite_engine: Engine,
) -> None:
    # `handover dispatch` and `serve` sharing an SQLite file (the Procfile).
    done = threading.Event()
    runner = JobRunner(
        sessionmaker(sqlite_engine), {"handover_ack": lambda claimed: done.set()},
        instance_id="worker", clock=FixedClock(WALL),
    )  # fmt: skip
    arrivals = runner._traffic
    assert isinstance(arrivals, JobArrivals)
    arrivals._hold = LONG  # only "quiet" ends the wait: no test waits out a lapse
    traffic = SlackTraffic(quiet=0.01)
    beacon = TrafficBeacon(sqlite_engine, traffic, sender="web-1")
    runner.start()
    beacon.start()
    serving = traffic.serving()
    try:
        serving.__enter__()
        wait_for(lambda: "web-1" in files_of(sqlite_engine).heartbeats())
        with sqlite_engine.begin() as connection:
            add_jobs(connection, [job(1)], now=datetime.now(UTC))
        assert not done.wait(1.0)  # well within YIELD_SECONDS
        serving.__exit__(None, None, None)
        assert done.wait(30)
    finally:
        beacon.stop()
        runner.shutdown()


def test_on_sqlite_a_busy_web_process_holds_a_job_at_most_yield_seconds_after_it_was_written(
    sqlite_engine: Engine,
) -> None:
    ran: list[int] = []
    runner = JobRunner(
        sessionmaker(sqlite_engine),
        {"handover_ack": lambda claimed: ran.append(claimed.payload["value"])},
        instance_id="worker", clock=FixedClock(WALL), wall_clock=FixedClock(WALL),
    )  # fmt: skip
    files = files_of(sqlite_engine)
    files.busy("web-1")
    runner._traffic._hold = LONG
    with sqlite_engine.begin() as connection:
        add_jobs(connection, [job(1)], now=WALL - timedelta(seconds=10))
        add_jobs(connection, [job(2)], now=WALL - timedelta(seconds=YIELD_SECONDS - 0.3))
    started = time.monotonic()
    assert runner.run_ready() == 2
    assert sorted(ran) == [1, 2]
    assert time.monotonic() - started >= 0.25  # job 2 waited out the rest of its 5 s
    assert "web-1" in files.heartbeats()  # still busy


WEB_PROCESS = """
import sys, time
from sqlalchemy import create_engine
from bot.slackjobs.beacon import TrafficBeacon
from bot.web.work import SlackTraffic
traffic = SlackTraffic()
TrafficBeacon(create_engine(sys.argv[1]), traffic, sender="web-1").start()
with traffic.serving():
    time.sleep(600)
"""


def test_a_web_process_killed_mid_burst_holds_nothing_after_the_hold(
    sqlite_engine: Engine,
) -> None:
    files = files_of(sqlite_engine)
    url = sqlite_engine.url.render_as_string(hide_password=False)
    web = subprocess.Popen([sys.executable, "-c", WEB_PROCESS, url], cwd=ROOT)
    try:
        wait_for(lambda: "web-1" in files.heartbeats(), timeout=30)
        arrivals = JobArrivals(files=files)
        assert arrivals.wait_for_a_pause(until=time.monotonic() + 0.3) is False
    finally:
        web.send_signal(signal.SIGKILL)
        web.wait(timeout=30)
    assert "web-1" in files.heartbeats()  # nobody removed it
    assert arrivals.wait_for_a_pause(until=time.monotonic() + LONG) is True
    time.sleep(max(0.0, BUSY_HOLD_SECONDS - (time.time() - files.heartbeats()["web-1"])))
    # The next web process to start removes it.
    beacon = TrafficBeacon(sqlite_engine, SlackTraffic(), sender="web-2")
    beacon.start()
    beacon.stop()
    assert files.heartbeats() == {}
