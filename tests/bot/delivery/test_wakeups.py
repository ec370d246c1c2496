"""When the dispatcher looks: woken by any writer of outbox rows, on time for a row due later, and
keeping its claims while it works (SQLite and PostgreSQL).

These run the real dispatcher in the background at the default safety interval (30 s), so
anything sent within a second was sent because something woke it. The end-to-end timings at the
default settings, with `serve` and `dispatch` as processes, are in tests/e2e/test_timing.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine.interfaces import CacheStats
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.slack import make_web_client
from bot.clock import FixedClock, SystemClock
from bot.db import create_db_engine, make_session_factory
from bot.delivery import outbox
from bot.delivery.dispatcher import Dispatcher
from bot.delivery.kinds import Outcome, RowState
from bot.delivery.wakeups import Daily, OutboxWatch, Wakeups
from bot.models import OutboxMessage, Target
from bot.settings import DEFAULT_DISPATCH_INTERVAL_SECONDS, Settings
from bot.slack_standin import SlackStandIn
from tests.bot.delivery.dispatch_fixtures import (
    MONDAY_9,
    add_prompt_for,
    add_referral,
    add_rota,
    make_dispatcher,
    messages_for,
)


def enqueue_prompt_to_jo(factory: sessionmaker[Session], due_at=MONDAY_9, *, rota=True) -> int:
    """A prompt to Jo Smith written the way intake writes one (`outbox.enqueue_prompt`)."""
    with factory.begin() as session:
        if rota:
            add_rota(session)
            add_referral(session)
        target = Target(
            referral_id="HO-K7M3QX",
            position=session.scalar(select(Target.id).order_by(Target.id.desc()).limit(1)) or 0,
            spec="person:hv-jsmith",
            planned_via="self",
            planned_recipient="hv-jsmith",
            due_at=due_at,
            state="held",
        )
        session.add(target)
        session.flush()
        row = outbox.enqueue_prompt(
            session, target, due_at, planned_via="self", planned_recipient="hv-jsmith"
        )
        return row.id


@pytest.fixture
def other_process(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on an engine of their own, as another process (serve, the API) would have."""
    engine = create_db_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


class Ticking:
    """Moves a FixedClock on from 09:00 with real time (every 10 ms) while it runs."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.01):
            self.clock.set(MONDAY_9 + timedelta(seconds=time.monotonic() - self.started))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def ticking(clock: FixedClock) -> Iterator[Ticking]:
    ticker = Ticking(clock)
    yield ticker
    ticker.stop()


@pytest.fixture
def running(
    settings: Settings,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    ticking: Ticking,
) -> Iterator[Dispatcher]:
    dispatcher = make_dispatcher(settings, session_factory, clock)
    assert dispatcher.interval_seconds == DEFAULT_DISPATCH_INTERVAL_SECONDS == 30.0
    dispatcher.start()
    time.sleep(0.5)  # its first pass (nothing due) is over, and the watch is listening
    yield dispatcher
    dispatcher.shutdown()


# A process of its own: in this one, another test may have loaded the calendars already.
STARTED_DISPATCHER = """
import sys
from bot.clock import SystemClock
from bot.db import create_db_engine, make_session_factory
from bot.settings import Settings
from tests.bot.delivery.dispatch_fixtures import EDT, TOKEN, make_dispatcher
url = sys.argv[1]
settings = Settings(
    database_url=url, slack_bot_token=TOKEN, slack_api_url="http://127.0.0.1:9/api/",
    edt_channel=EDT,
)
dispatcher = make_dispatcher(settings, make_session_factory(create_db_engine(url)), SystemClock())
loaded = "holidays.countries" in sys.modules
dispatcher.start()
print(loaded, "holidays.countries" in sys.modules)
dispatcher.shutdown()
"""


def test_a_dispatcher_loads_the_bank_holidays_as_it_starts_not_at_the_first_prompt_due(
    db_url: str,
) -> None:
    # `holidays` imports its ~280 country modules at first use: over a second on a loaded
    # machine, which would make the first prompt due late if composing it paid for them.
    result = subprocess.run(
        [sys.executable, "-c", STARTED_DISPATCHER, db_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["False", "True"], result.stderr


# What a unit of work flushes for the claimed row (the claim, the composer's notes): the
# statement depends on which columns the code changed, so only a flush of a row compiles it.
ROW_FLUSH = re.compile(r"UPDATE outbox SET .+ WHERE outbox\.id = \S+$")


def test_a_dispatcher_compiles_what_its_first_send_runs_as_it_starts_not_at_its_instant(
    db_url: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    slack: SlackStandIn,
) -> None:
    # SQLAlchemy compiles a statement at its first use in a process: for what a batch runs
    # before its first message (the claim, the batch's reads, routing, the calendar, the
    # claim's check and the rate bucket's token), a few tenths of a second on a loaded
    # machine, which made a new dispatcher's first messages late.
    with session_factory.begin() as session:
        add_rota(session)
        add_referral(session)
        prompt_id = add_prompt_for(session, "hv-jsmith", MONDAY_9 + timedelta(hours=1))
    engine = create_db_engine(db_url)  # a process's engine: nothing compiled on it yet
    factory = make_session_factory(engine)
    dispatcher = make_dispatcher(settings, factory, clock)
    dispatcher.start()
    time.sleep(0.5)  # its first pass (nothing due) is over
    dispatcher.shutdown()
    clock.set(MONDAY_9 + timedelta(hours=1))

    before_send: list[str] = []
    after_send: list[str] = []

    @event.listens_for(engine, "after_cursor_execute")
    def note_compiled(_conn, _cursor, statement, _params, context, _many) -> None:
        if context.cache_hit == CacheStats.CACHE_MISS:
            sent = bool(messages_for(slack, prompt_id))
            (after_send if sent else before_send).append(" ".join(statement.split()))

    try:
        # A dispatcher of this process that has not started: the first pass of `start`
        # found nothing due, so its statements are all this one's first use.
        stats = make_dispatcher(settings, factory, clock).run_once()
    finally:
        engine.dispose()
    assert stats.sent == 1
    assert messages_for(slack, prompt_id)
    # The bucket's first row is written once a database, at its first message ever.
    late = [s for s in before_send if not s.startswith("INSERT INTO slack_rate_buckets")]
    assert [s for s in late if not ROW_FLUSH.match(s)] == []
    # Confirming compiles its writes after the message is sent (the outcome, the audit
    # chain, the card): they make no message late.
    assert after_send


def first_claimed(factory: sessionmaker[Session], row_id: int, timeout: float = 5) -> timedelta:
    """When the row was first claimed, on the ticking clock (from 09:00)."""
    row = wait_for_state(factory, row_id, RowState.SENT, timeout)
    claimed_at = outbox.first_claimed_at(row)
    assert claimed_at is not None
    return claimed_at - MONDAY_9


def wait_for_messages(slack: SlackStandIn, prompt_id: int, timeout: float) -> float:
    """Seconds until the prompt's message reached the stand-in (fails after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if messages_for(slack, prompt_id):
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"prompt {prompt_id} not sent within {timeout} s")


def wait_for_state(
    factory: sessionmaker[Session], row_id: int, state: RowState, timeout: float = 5
) -> OutboxMessage:
    """The row once it is in `state` (the message may reach Slack before the row is settled)."""
    deadline = time.monotonic() + timeout
    while True:
        with factory() as session:
            row = session.get(OutboxMessage, row_id)
            if row.state == state or time.monotonic() > deadline:
                assert row.state == state
                return row
        time.sleep(0.01)


def test_the_watch_sees_outbox_rows_another_connection_commits(
    db_url: str, engine, other_process: sessionmaker[Session]
) -> None:
    woken = threading.Event()
    watch = OutboxWatch(engine, woken.set)
    assert watch.mechanism == ("listen" if db_url.startswith("postgresql") else "data_version")
    watch.start()
    try:
        assert woken.wait(5), "the watch calls once when it starts listening"
        woken.clear()
        # A transaction that writes rows and rolls back wakes nobody.
        with other_process() as session, session.begin():
            add_rota(session)
            add_referral(session)
            session.rollback()
        assert not woken.wait(0.5)
        # From its commit, not from before the write (which can itself take that long on a
        # loaded machine).
        committing: list[float] = []
        event.listen(other_process, "before_commit", lambda _: committing.append(time.monotonic()))
        enqueue_prompt_to_jo(other_process)
        assert woken.wait(1.0)
        [started] = committing
        assert time.monotonic() - started < 0.5
    finally:
        watch.stop()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_listener_comes_back_after_its_connection_is_cut(
    db_url: str, engine, other_process: sessionmaker[Session]
) -> None:
    woken = threading.Event()
    watch = OutboxWatch(engine, woken.set)
    watch.start()
    try:
        assert woken.wait(5)
        woken.clear()
        # The server ends the listening session (a restart, a failover, an idle-session reaper).
        with engine.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            ).all()
        assert ended == [(True,)]
        # Back within a reconnect (1 s) and a wait on the dead socket (at most 1 s): it calls once,
        # since rows written meanwhile sent no signal it could see...
        assert woken.wait(5)
        woken.clear()
        # ...and hears the next commit again.
        enqueue_prompt_to_jo(other_process)
        assert woken.wait(1.0)
    finally:
        watch.stop()


def test_an_in_memory_sqlite_database_has_nothing_to_watch() -> None:
    engine = create_db_engine("sqlite://")
    try:
        watch = OutboxWatch(engine, lambda: None)
        assert watch.mechanism is None
        watch.start()  # does nothing: only this process writes, and wakes its dispatcher itself
        watch.stop()
    finally:
        engine.dispose()


def test_a_dispatcher_stopped_just_after_it_starts_stops_cleanly(
    settings: Settings,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A stop on SIGTERM right after a start: APScheduler's thread may then be submitting the
    # first pass, the retention run or a wake-up, and must not die on JobLookupError (a
    # traceback in the log). Before the fix, 1 to 15 of these 20 did, with the load.
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    for _ in range(20):
        dispatcher = make_dispatcher(settings, session_factory, clock)
        dispatcher.start()
        dispatcher.shutdown()
    time.sleep(0.2)  # a thread dying late still reports
    assert died == []
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_wakeups_stopped_while_their_scheduler_submits_a_job_stop_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The race above without a database, so that it is met every time: a stop at once after
    # the start finds APScheduler's thread submitting the first pass and the daily run (a date
    # job, removed from its store once submitted). Before the fix, 86 to 98 of these 100
    # stops killed that thread.
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    daily = Daily(run=lambda: None, next_at=lambda after: after + timedelta(days=1))
    for _ in range(100):
        stopping = threading.Event()
        wakeups = Wakeups(lambda: None, lambda: None, SystemClock(), stopping, daily=daily)
        wakeups.start(interval_seconds=30)
        stopping.set()
        wakeups.stop()
    time.sleep(0.2)
    assert died == []


def test_a_row_written_by_another_process_is_taken_at_once(
    running: Dispatcher,
    other_process: sessionmaker[Session],
    slack: SlackStandIn,
    clock: FixedClock,
) -> None:
    # From its commit, not from before the write: writing the rota, the referral and the prompt
    # can itself take over a quarter of a second on a loaded machine.
    committing: list[timedelta] = []
    event.listen(
        other_process, "before_commit", lambda _: committing.append(clock.now() - MONDAY_9)
    )
    prompt_id = enqueue_prompt_to_jo(other_process)
    [written] = committing
    # The dispatcher claimed it within a quarter of a second of the commit: woken, not polled
    # (its safety pass is 30 s away). How long the pass then takes is the machine's.
    assert (
        timedelta(0) <= first_claimed(other_process, prompt_id) - written < timedelta(seconds=0.25)
    )
    assert len(messages_for(slack, prompt_id)) == 1


def test_a_row_due_later_is_taken_at_its_instant(
    running: Dispatcher,
    other_process: sessionmaker[Session],
    slack: SlackStandIn,
    clock: FixedClock,
) -> None:
    due = clock.now() + timedelta(seconds=2)
    prompt_id = enqueue_prompt_to_jo(other_process, due)
    # Not before its instant, and at it: the next wake-up is the earliest due row, not the
    # safety pass.
    lateness = first_claimed(other_process, prompt_id) - (due - MONDAY_9)
    assert timedelta(0) <= lateness < timedelta(seconds=0.25)
    row = wait_for_state(other_process, prompt_id, RowState.SENT)
    assert row.sent_at >= due
    assert len(messages_for(slack, prompt_id)) == 1


def test_a_429_goes_back_to_the_outbox_and_the_next_row_keeps_its_claim_while_it_waits(
    settings: Settings,
    session_factory: sessionmaker[Session],
    slack: SlackStandIn,
    clock: FixedClock,
) -> None:
    # A lease of 3 s (renewed every second) against a 429 asking for 7 s. The row that met it
    # goes back to the outbox at once (nothing sleeps inside a send); the next row of the batch
    # waits for the shared bucket to reopen, before its send, and without renewal its claim
    # would lapse twice over. (The default lease is 30 s, renewed every 10 s; the short one
    # only keeps this test short. A renewal may be late by 2 s on a busy machine and the claim
    # still holds.)
    first = enqueue_prompt_to_jo(session_factory)
    second = enqueue_prompt_to_jo(session_factory, rota=False)
    holder = Dispatcher(
        settings,
        session_factory,
        make_web_client(settings),
        clock,
        instance_id="holder",
        lease=timedelta(seconds=3),
    )
    rival = make_dispatcher(settings, session_factory, clock, name="rival")
    slack.rate_limit_storm("chat.postMessage", retry_after=7)
    ticker = Ticking(clock)
    results: list = []
    sending = threading.Thread(target=lambda: results.append(holder.run_once()))
    sending.start()
    taken: list[int] = []
    renewals: set = set()
    try:
        wait_for_state(session_factory, second, RowState.CLAIMED)  # the holder has it
        while sending.is_alive():
            with session_factory.begin() as session:
                taken += [
                    row.id
                    for row in outbox.claim_due(
                        session, clock.now(), instance_id="rival", limit=10, lease=rival.lease
                    )
                ]
            with session_factory() as session:
                row = session.get(OutboxMessage, second)
                if row.state == RowState.CLAIMED:
                    renewals.add(row.claimed_until)
            time.sleep(0.1)
    finally:
        sending.join()
        ticker.stop()
    assert time.monotonic() - ticker.started >= 7.0  # the second row waited for the bucket
    assert second not in taken  # (the first, due again after 7 s, and cards are fair game)
    assert len(renewals) >= 4  # claimed, then renewed every second of the wait
    prompts = [(r.row_id, r.outcome, r.reason) for r in results[0].results if r.kind == "prompt"]
    assert prompts[:2] == [
        (first, Outcome.RETRYING, "ratelimited"),
        (second, Outcome.DELIVERED, None),
    ]
    assert len(messages_for(slack, second)) == 1
    assert len(messages_for(slack, first)) <= 1
    with session_factory() as session:
        row = session.get(OutboxMessage, second)
        assert (row.state, row.claimed_by) == (RowState.SENT, "holder")


def test_renewing_touches_only_our_own_claims(session_factory: sessionmaker[Session]) -> None:
    first = enqueue_prompt_to_jo(session_factory)
    second = enqueue_prompt_to_jo(session_factory, rota=False)
    with session_factory.begin() as session:
        [mine] = outbox.claim_due(session, MONDAY_9, instance_id="me", limit=1)
        [theirs] = outbox.claim_due(session, MONDAY_9, instance_id="them", limit=1)
        assert (mine.id, theirs.id) == (first, second)
    later = MONDAY_9 + timedelta(seconds=20)
    with session_factory.begin() as session:
        renewed = outbox.renew_claims(
            session, instance_id="me", now=later, lease=outbox.DEFAULT_LEASE
        )
        assert renewed == 1
    with session_factory() as session:
        assert session.get(OutboxMessage, first).claimed_until == later + timedelta(seconds=30)
        assert session.get(OutboxMessage, second).claimed_until == MONDAY_9 + timedelta(seconds=30)
    lease = (outbox.DEFAULT_LEASE, outbox.LEASE_RENEWAL)
    assert lease == (timedelta(seconds=30), timedelta(seconds=10))
