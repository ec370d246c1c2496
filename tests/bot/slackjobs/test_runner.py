"""The slack_jobs table and its runner (bot/slackjobs/), on SQLite and PostgreSQL: a replayed
request is one job, done once; two runners do each job once; a failing job is retried after
its backoff and, past its attempts, dropped with its audit event; a runner that died holding a
job leaves it to another when its lease ends."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.delivery.pacing import RATE_LIMITED_FOR, _may_still_wait
from bot.models import AuditEvent, SlackJob
from bot.slackjobs import queue
from bot.slackjobs.queue import ClaimedJob, NewJob, add_jobs
from bot.slackjobs.runner import (
    ARRIVALS_QUIET_SECONDS,
    LEASE_MARGIN_SECONDS,
    GiveUp,
    JobArrivals,
    JobRunner,
)
from bot.slackjobs.writer import JobWriter
from tests.handlers.slack_payloads import wait_for

WALL = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
SIGNED_AT = int(WALL.timestamp())


def job(n: int, signature: str | None = None) -> NewJob:
    return NewJob(
        kind="handover_ack",
        payload={"user": "U1", "value": n, "channel": "D1", "message_ts": "1.2", "workspace": None},
        signature=signature,
        timestamp=SIGNED_AT if signature else None,
    )


def states(session_factory: sessionmaker[Session]) -> list[tuple[str, int]]:
    with session_factory() as session:
        rows = session.scalars(select(SlackJob).order_by(SlackJob.id))
        return [(row.state, row.attempts) for row in rows]


def runner(
    session_factory: sessionmaker[Session], work: dict[str, Any], name: str, clock: FixedClock
) -> JobRunner:
    return JobRunner(
        session_factory, work, instance_id=name, clock=clock, wall_clock=clock, workers=2
    )


def test_a_replayed_request_is_one_job_done_once(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    done: list[ClaimedJob] = []
    clock = FixedClock(WALL)
    with engine.begin() as connection:
        added = add_jobs(connection, [job(1, "ab" * 32), job(1, "ab" * 32)], now=WALL)
    assert added == [job(1, "ab" * 32)]  # a replay in the same batch: the first one
    with engine.begin() as connection:
        assert add_jobs(connection, [job(1, "ab" * 32), job(2, "cd" * 32)], now=WALL) == [
            job(2, "cd" * 32)
        ]
    jobs = runner(session_factory, {"handover_ack": done.append}, "r1", clock)
    assert jobs.run_ready() == 2
    assert jobs.run_ready() == 0
    assert [d.payload["value"] for d in done] == [1, 2]
    assert states(session_factory) == [("done", 1), ("done", 1)]
    # The signature is kept until it could no longer pass Slack's check, then forgotten.
    with engine.begin() as connection:
        assert add_jobs(connection, [job(1, "ab" * 32)], now=WALL) == []
    with session_factory.begin() as session:
        assert queue.forget_finished_jobs(session, now=WALL + timedelta(minutes=6)) == 0
        assert queue.forget_finished_jobs(session, now=WALL + timedelta(minutes=7)) == 2
    with engine.begin() as connection:
        assert add_jobs(connection, [job(1, "ab" * 32)], now=WALL) == [job(1, "ab" * 32)]


def test_one_insert_statement_a_batch(engine: Engine) -> None:
    statements: list[str] = []

    def keep(_conn, _cursor, statement: str, *_args: object) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", keep)
    try:
        with engine.begin() as connection:
            add_jobs(connection, [job(n, f"{n:064x}") for n in range(50)], now=WALL)
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    # One INSERT for the 50 (and, on PostgreSQL, the NOTIFY that wakes the runners).
    expected = ["INSERT", "SELECT"] if engine.dialect.name == "postgresql" else ["INSERT"]
    assert [s for s in statements if s != "BEGIN"] == expected


def test_two_runners_do_each_job_once(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    done: Counter[int] = Counter()
    lock = threading.Lock()

    def work(job: ClaimedJob) -> None:
        with lock:
            done[job.payload["value"]] += 1

    with engine.begin() as connection:
        add_jobs(connection, [job(n, f"{n:064x}") for n in range(200)], now=WALL)
    clock = FixedClock(WALL)
    runners = [runner(session_factory, {"handover_ack": work}, f"r{i}", clock) for i in (1, 2)]
    for each in runners:
        each.start()
    try:
        wait_for(lambda: sum(done.values()) >= 200, timeout=60)
    finally:
        for each in runners:
            each.shutdown()
    assert done == Counter(range(200))
    with session_factory() as session:
        holders = Counter(session.scalars(select(SlackJob.state)))
    assert holders == Counter({"done": 200})


def test_a_failing_job_is_retried_after_its_backoff_then_dropped_with_its_event(
    engine: Engine, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def failing(job: ClaimedJob) -> None:
        calls.append(job.payload["value"])
        raise RuntimeError("Slack is down")

    clock = FixedClock(WALL)
    with engine.begin() as connection:
        add_jobs(connection, [job(7, "ef" * 32)], now=WALL)
    jobs = runner(session_factory, {"handover_ack": failing}, "r1", clock)
    for attempt, wait in enumerate(queue.BACKOFF, start=1):
        assert jobs.run_ready() == 1
        assert states(session_factory) == [("waiting", attempt)]
        clock.set(clock.now() + wait - timedelta(seconds=1))
        assert jobs.run_ready() == 0  # not before its backoff
        clock.set(clock.now() + timedelta(seconds=1))
    with caplog.at_level(logging.ERROR, logger="bot.slackjobs.runner"):
        assert jobs.run_ready() == 1
    assert calls == [7] * queue.MAX_ATTEMPTS == [7] * 5
    assert states(session_factory) == [("dropped", 5)]
    with session_factory() as session:
        [dropped] = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "slack_job_dropped")
        )
        [row] = session.scalars(select(SlackJob))
    assert json.loads(dropped.detail) == {
        "job": row.id, "kind": "handover_ack", "attempts": 5, "error": "RuntimeError",
    }  # fmt: skip
    assert dropped.at == clock.now() and dropped.referral_id is None
    assert row.last_error == "RuntimeError" and row.finished_at == clock.now()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        *(f"slack job {row.id} (handover_ack) failed, attempt {n}" for n in range(1, 6)),
        f"slack job {row.id} (handover_ack) dropped after 5 attempts (RuntimeError)",
    ]
    assert jobs.run_ready() == 0


def notice_of(made: list[ClaimedJob]):
    """A runner's `dropped_notice` that keeps each job it is given: a job of kind "notice"."""

    def make(job: ClaimedJob) -> NewJob:
        made.append(job)
        return NewJob(kind="notice", payload={"user": job.payload["user"], "of": job.id})

    return make


def kinds(session_factory: sessionmaker[Session]) -> list[tuple[str, str, int]]:
    with session_factory() as session:
        rows = session.scalars(select(SlackJob).order_by(SlackJob.id))
        return [(row.kind, row.state, row.attempts) for row in rows]


def test_a_dropped_jobs_notice_is_written_with_its_drop_once_even_when_a_runner_died_dropping_it(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    made: list[ClaimedJob] = []
    told: list[ClaimedJob] = []

    def failing(job: ClaimedJob) -> None:
        raise RuntimeError("Slack is down")

    with engine.begin() as connection:
        add_jobs(connection, [job(7, "ef" * 32)], now=WALL)
    clock = FixedClock(WALL)

    def runner_told(name: str) -> JobRunner:
        return JobRunner(
            session_factory, {"handover_ack": failing, "notice": told.append}, instance_id=name,
            clock=clock, wall_clock=clock, workers=1, dropped_notice=notice_of(made),
        )  # fmt: skip

    first = runner_told("r1")
    for wait in queue.BACKOFF:
        assert first.run_ready() == 1
        clock.set(clock.now() + wait)
    assert made == []  # retried: no notice yet
    # The runner of the last attempt dies before its drop is committed: the job is claimed,
    # tried and dropped again once its lease has ended, and its notice written then, once.
    with session_factory.begin() as session:
        queue.claim_ready(
            session, clock.now(), instance_id="dead", limit=1, lease=queue.DEFAULT_LEASE
        )
    clock.set(clock.now() + queue.DEFAULT_LEASE + timedelta(seconds=1))
    second = runner_told("r2")
    assert second.run_ready() == 1
    [dropped] = made
    assert (dropped.kind, dropped.payload["user"], dropped.attempts) == ("handover_ack", "U1", 6)
    assert dropped.created_at == WALL  # when the click was written, for its notice
    # Written with the drop, ready at once: the next claim (this runner's or any other's) runs it.
    assert kinds(session_factory) == [("handover_ack", "dropped", 6), ("notice", "waiting", 0)]
    assert second.run_ready() == 1
    [notice] = told
    assert notice.payload == {"user": "U1", "of": dropped.id}
    assert kinds(session_factory) == [("handover_ack", "dropped", 6), ("notice", "done", 1)]
    # A dropped job is never claimed again, so its notice is never written again.
    clock.set(clock.now() + timedelta(hours=1))
    assert runner_told("r3").run_ready() == 0
    assert len(made) == len(told) == 1


def test_a_runner_whose_lease_ended_writes_no_notice_of_the_drop_it_no_longer_holds(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    made: list[ClaimedJob] = []
    late: list[JobRunner] = []

    def failing(job: ClaimedJob) -> None:
        if job.claimed_by == "slow":  # while it works, its lease ends and "r2" takes the job
            clock.set(clock.now() + queue.DEFAULT_LEASE + timedelta(seconds=1))
            assert late[0].run_ready() == 1
        raise RuntimeError("the database is down")

    with engine.begin() as connection:
        add_jobs(connection, [job(8)], now=WALL)
    clock = FixedClock(WALL)
    slow, r2 = (
        JobRunner(
            session_factory,
            {"handover_ack": failing},
            instance_id=name,
            clock=clock,
            wall_clock=clock,
            workers=1,
            backoff=(),
            dropped_notice=notice_of(made),
        )
        for name in ("slow", "r2")
    )
    late.append(r2)
    assert slow.run_ready() == 1
    assert [(j.claimed_by, j.attempts) for j in made] == [("r2", 2)]  # "slow" wrote none
    assert kinds(session_factory) == [("handover_ack", "dropped", 2), ("notice", "waiting", 0)]


def test_a_job_given_up_by_its_work_makes_no_notice(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    # Its work told its user why (a command's expired response_url: handlers/command_jobs.py).
    made: list[ClaimedJob] = []

    def giving_up(job: ClaimedJob) -> None:
        raise GiveUp("too late")

    with engine.begin() as connection:
        add_jobs(connection, [job(9)], now=WALL)
    clock = FixedClock(WALL)
    jobs = JobRunner(
        session_factory, {"handover_ack": giving_up}, instance_id="r1", clock=clock,
        wall_clock=clock, workers=1, dropped_notice=notice_of(made),
    )  # fmt: skip
    assert jobs.run_ready() == 1
    assert kinds(session_factory) == [("handover_ack", "dropped", 1)]
    assert made == []


def test_a_jobs_private_part_is_kept_for_its_retries_and_erased_when_it_is_dropped(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    private = {"response_url": "https://hooks.slack.test/1", "args": ["HO-1", "a reason"]}
    payload = {"user": "U1", "issued_at": SIGNED_AT, "private": private}
    seen: list[dict] = []

    def failing(job: ClaimedJob) -> None:
        seen.append(job.payload)
        raise RuntimeError("the database is down")

    with engine.begin() as connection:
        add_jobs(connection, [NewJob(kind="handover_command_close", payload=payload)], now=WALL)
    clock = FixedClock(WALL)
    jobs = runner(session_factory, {"handover_command_close": failing}, "r1", clock)
    for wait in (*queue.BACKOFF, timedelta(0)):
        assert jobs.run_ready() == 1
        clock.set(clock.now() + wait)
    assert seen == [payload] * 5  # every attempt had what the work needs
    with session_factory() as session:
        [row] = session.scalars(select(SlackJob))
    assert (row.state, json.loads(row.payload)) == (
        "dropped",
        {"user": "U1", "issued_at": SIGNED_AT},
    )


def test_a_job_of_an_unknown_kind_is_retried_like_a_failure(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with engine.begin() as connection:
        add_jobs(connection, [NewJob(kind="handover_future", payload={})], now=WALL)
    jobs = runner(session_factory, {}, "r1", FixedClock(WALL))
    assert jobs.run_ready() == 1
    with session_factory() as session:
        [row] = session.scalars(select(SlackJob))
    assert (row.state, row.attempts, row.last_error) == ("waiting", 1, "UnknownJobKind")


def test_a_job_held_by_a_runner_that_died_is_done_by_another_after_its_lease(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with engine.begin() as connection:
        add_jobs(connection, [job(3, "12" * 32)], now=WALL)
    with session_factory.begin() as session:  # a runner claims it, then dies
        [held] = queue.claim_ready(
            session, WALL, instance_id="dead", limit=5, lease=queue.DEFAULT_LEASE
        )
    done: list[ClaimedJob] = []
    clock = FixedClock(WALL + queue.DEFAULT_LEASE)
    jobs = runner(session_factory, {"handover_ack": done.append}, "alive", clock)
    assert jobs.run_ready() == 0  # its lease has not ended
    clock.set(WALL + queue.DEFAULT_LEASE + timedelta(seconds=1))
    assert jobs.run_ready() == 1
    assert [d.payload["value"] for d in done] == [3]
    assert states(session_factory) == [("done", 2)]
    with session_factory.begin() as session:  # the dead runner's late finish changes nothing
        assert not queue.finish(session, held.id, instance_id="dead", now=clock.now())


def test_the_writer_batches_what_gathers_and_wakes_the_runner(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    woken: list[int] = []
    writer = JobWriter(engine, on_written=lambda: woken.append(1), wall_clock=FixedClock(WALL))
    refused: list[int] = []
    try:
        for n in range(30):
            assert writer.submit(job(n, f"{n:064x}"), refused=lambda n=n: refused.append(n))
        assert writer.submit(job(0, f"{0:064x}"), refused=lambda: refused.append(-1))  # replay
        assert writer.drain(timeout=10)
    finally:
        writer.shutdown()
    assert refused == [] and 1 <= len(woken) <= 31
    with session_factory() as session:
        values = [json.loads(p)["value"] for p in session.scalars(select(SlackJob.payload))]
    assert sorted(values) == list(range(30))


def test_the_writer_gathers_a_burst_into_one_transaction(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    # Each commit that adds jobs wakes the runner once: one wake, one transaction.
    woken: list[int] = []
    writer = JobWriter(engine, on_written=lambda: woken.append(1), linger=1.0)
    try:
        for n in range(12):  # over 0.24 s: without the linger, several commits
            assert writer.submit(job(n, f"{n:064x}"), refused=lambda: None)
            time.sleep(0.02)
        assert writer.drain(timeout=10)
    finally:
        writer.shutdown()
    assert woken == [1]
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(SlackJob)) == 12


def test_the_writer_refuses_beyond_its_capacity(engine: Engine) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:  # the first batch's commit is followed by a wait: the writer is busy
        entered.set()
        release.wait(10)

    writer = JobWriter(engine, on_written=hold, capacity=2)
    try:
        assert writer.submit(job(1), refused=lambda: None)
        assert entered.wait(10)
        assert writer.submit(job(2), refused=lambda: None)  # 2 in hand: the capacity
        assert not writer.submit(job(3), refused=lambda: None)
        release.set()
        assert writer.drain(timeout=10)
        assert writer.submit(job(4), refused=lambda: None)
    finally:
        release.set()
        writer.shutdown()


def test_job_arrivals_wait_for_a_pause_in_the_writing_at_most_until() -> None:
    arrivals = JobArrivals(quiet=0.5)
    assert arrivals.wait_for_a_pause(until=time.monotonic())  # nothing written: a pause
    writing = threading.Event()
    last: list[float] = []

    def write(seconds: float) -> None:
        end = time.monotonic() + seconds
        writing.set()
        while time.monotonic() < end:
            arrivals.arrived()
            last.append(time.monotonic())
            time.sleep(0.01)

    # A steady stream for 1 s: the wait ends half a second (the quiet time) after it stops.
    thread = threading.Thread(target=write, args=(1.0,))
    thread.start()
    writing.wait()
    assert arrivals.wait_for_a_pause(until=time.monotonic() + 30)
    paused_at = time.monotonic()
    thread.join()
    assert paused_at - last[-1] >= 0.5
    # A stream longer than the wait: it gives up at `until`.
    writing.clear()
    thread = threading.Thread(target=write, args=(3.0,))
    thread.start()
    writing.wait()
    started = time.monotonic()
    assert not arrivals.wait_for_a_pause(until=started + 0.3)
    assert 0.3 <= time.monotonic() - started < 2.5
    thread.join()


def test_a_runner_apart_from_the_web_process_waits_for_a_pause_in_the_jobs_written(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    # `handover dispatch` on PostgreSQL: a job is run once no other job has been written for
    # ARRIVALS_QUIET_SECONDS (the writing stands for Slack's requests too). On SQLite it hears
    # only the web processes' traffic files (tests/bot/slackjobs/test_beacon.py): with none
    # busy it runs at once.
    done: dict[int, float] = {}
    jobs = JobRunner(
        session_factory,
        {"handover_ack": lambda job: done.setdefault(job.payload["value"], time.monotonic())},
        instance_id="worker",
        clock=FixedClock(WALL),
    )
    jobs.start()
    try:
        if engine.dialect.name == "postgresql":
            arrivals = jobs._traffic
            assert isinstance(arrivals, JobArrivals)
            # Until the runner's LISTEN is up, a NOTIFY goes unheard: knock until it is heard.
            heard = arrivals._last

            def listening() -> bool:
                with engine.begin() as connection:
                    connection.execute(
                        text("SELECT pg_notify(:c, '')"), {"c": queue.NOTIFY_CHANNEL}
                    )
                time.sleep(0.05)
                return arrivals._last != heard

            wait_for(listening, timeout=30)
            time.sleep(ARRIVALS_QUIET_SECONDS)
        else:
            assert isinstance(jobs._traffic, JobArrivals)
        written_at = time.monotonic()
        with engine.begin() as connection:
            # Written now: a job waits for a pause at most YIELD_SECONDS after it became ready.
            add_jobs(connection, [job(1, f"{1:064x}")], now=datetime.now(UTC))
        if engine.dialect.name != "postgresql":
            jobs.wake()  # as the watch does within 50 ms (an in-memory database has none)
        wait_for(lambda: 1 in done, timeout=30)
    finally:
        jobs.shutdown()
    if engine.dialect.name == "postgresql":
        assert done[1] - written_at >= ARRIVALS_QUIET_SECONDS


def test_a_jobs_paced_calls_stop_waiting_before_its_lease_ends(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    """A runner holds its batch's leases from the claim: each job's paced Slack calls may wait
    for tokens only until LEASE_MARGIN_SECONDS before they end (bot/delivery/pacing.py), or the
    job could be claimed again by another runner and done twice."""
    allowed: list[float] = []
    with engine.begin() as connection:
        add_jobs(connection, [job(1), job(2)], now=WALL)
    jobs = JobRunner(
        session_factory,
        {"handover_ack": lambda _job: allowed.append(_may_still_wait(0.0))},
        instance_id="r1",
        clock=FixedClock(WALL),
        wall_clock=FixedClock(WALL),
        lease=timedelta(seconds=50),
    )
    assert jobs.run_ready() == 2
    assert len(allowed) == 2
    assert all(0 < seconds <= 50 - LEASE_MARGIN_SECONDS for seconds in allowed)
    assert _may_still_wait(0.0) == RATE_LIMITED_FOR  # outside a job, the calls' own cap only
