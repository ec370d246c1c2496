"""The messages a click's job posts are paced through the dispatchers' shared buckets, and a
429 pauses the workspace for everyone (bot/delivery/pacing.py, `Pacer.job_client`).

Signed clicks go to the real Bolt app; their jobs run on the runner `serve` builds
(bot/web/server.py's `slack_job_runner`), one thread, against the Slack stand-in. Time is
simulated: the stand-in records each call at the simulated instant, which only the pacer's
sleeps move on, so the instants asserted are exact. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery.dispatcher import Dispatcher
from bot.delivery.pacing import Pacer, tiers_for
from bot.models import SlackJob
from bot.settings import Settings
from bot.slack_standin.model import Fault, RecordedCall
from handlers import ids
from tests.handlers.slack_payloads import (
    Harness,
    Scenario,
    block_actions,
    build_scenario,
    open_jobs,
    running_bot,
    slack_user,
    wait_for,
)

START = 1_800_000_000.0
MESSAGES = ("chat.postMessage", "chat.update")


class SimulatedTime:
    """Unix time that only sleeps move on. A sleep ends at the instant its caller meant (what
    its thread last read, plus the pause), and time never goes back; `during_next_sleep` runs
    once, at the start of the next sleep, before time moves."""

    def __init__(self) -> None:
        self._now = START
        self._lock = threading.Lock()
        self._read = threading.local()
        self.during_next_sleep: Callable[[], None] | None = None

    def now(self) -> float:
        with self._lock:
            value = self._now
        self._read.at = value
        return value

    def sleep(self, seconds: float) -> None:
        until = getattr(self._read, "at", self.now()) + seconds
        hook, self.during_next_sleep = self.during_next_sleep, None
        if hook is not None:
            hook()
        with self._lock:
            self._now = max(self._now, until)


@contextmanager
def paced_bot(
    session_factory: sessionmaker[Session], **settings: float
) -> Iterator[tuple[Harness, Scenario, SimulatedTime, Pacer]]:
    time = SimulatedTime()
    engine = session_factory.kw["bind"]
    pacer = Pacer(engine, tiers_for(Settings(**settings)), now=time.now, sleep=time.sleep)
    with running_bot(
        session_factory,
        in_process=True,
        slack_clock=time.now,
        pacer=pacer,
        job_workers=1,
        **settings,
    ) as bot:
        yield bot, build_scenario(session_factory, bot.client), time, pacer


def click(bot: Harness, person_id: str, action: str, prompt_id: int, dm: tuple[str, str]) -> None:
    payload = block_actions(
        slack_user(person_id), action, str(prompt_id), channel_id=dm[0], message_ts=dm[1]
    )
    assert bot.send_payload(payload).status == 200


def all_done(session_factory: sessionmaker[Session], jobs: int) -> None:
    """Wait until `jobs` jobs were written (the writer batches them after the acks) and done."""

    def done() -> bool:
        with session_factory() as session:
            written = len(session.scalars(select(SlackJob.id)).all())
        return written >= jobs and open_jobs(session_factory) == 0

    wait_for(done, timeout=30)


def messages_since(bot: Harness, first: int) -> list[RecordedCall]:
    return [call for call in bot.standin.calls()[first:] if call.method in MESSAGES]


def test_a_click_storms_messages_never_exceed_the_workspaces_rate(
    session_factory: sessionmaker[Session],
) -> None:
    # One message a second (HANDOVER_SLACK_RATE=1): the bucket holds one token.
    with paced_bot(session_factory, slack_rate=1) as (bot, scenario, _, _):
        first = len(bot.standin.calls())
        kpatel_dm = (scenario.dm_channel, scenario.dm_ts)
        click(bot, "pc-jones", ids.ACK, scenario.role_prompt_id, scenario.role_dm)
        click(bot, "hv-kpatel", ids.ACK, scenario.prompt_id, kpatel_dm)
        click(bot, "hv-kpatel", ids.ACK, scenario.prompt_id, kpatel_dm)  # told privately
        click(bot, "hv-lead", ids.NOT_KNOWN, scenario.prompt_id, kpatel_dm)  # her manager
        all_done(session_factory, 4)
        sent = messages_since(bot, first)

    # Each response shown on its prompt's DM and replied on the card: all of them posted...
    assert len(sent) >= 4
    assert all(call.status == 200 and call.response["ok"] for call in sent)
    # ...and no second holds more than the bucket's token plus a second's rate.
    instants = sorted(call.timestamp for call in sent)
    for at in instants:
        assert len([t for t in instants if at <= t < at + 1.0]) <= 2
    assert instants[-1] - instants[0] >= len(sent) - 2  # one at once, then one a second


def test_a_429_on_a_clicks_update_pauses_the_dispatcher_and_the_update_is_made_once_after_it(
    session_factory: sessionmaker[Session],
) -> None:
    with paced_bot(session_factory) as (bot, scenario, time, pacer):
        dispatcher = Dispatcher(
            bot.services.settings, session_factory, bot.client, bot.clock, "t", pacer=pacer
        )
        # Five 429s in a row on the update of pc-jones's DM, each saying "wait 2 s".
        dm_channel, dm_ts = scenario.role_dm
        bot.standin.inject(
            Fault("ratelimit", method="chat.update", channel=dm_channel, count=5, retry_after=2)
        )
        dispatched_at: list[float] = []

        def dispatch_while_paused() -> None:
            # The job's first wait after its 429: the dispatcher runs now, with the referral's
            # card to redraw (the response just recorded).
            dispatched_at.append(time.now())
            dispatcher.run_once()

        time.during_next_sleep = dispatch_while_paused
        first = len(bot.standin.calls())
        click(bot, "pc-jones", ids.ACK, scenario.role_prompt_id, scenario.role_dm)
        all_done(session_factory, 1)
        sent = messages_since(bot, first)
        with session_factory() as session:
            [job] = session.scalars(select(SlackJob).where(SlackJob.kind == ids.ACK)).all()
            job_state = (job.state, job.attempts)

    updates = [c for c in sent if c.method == "chat.update" and c.args.get("ts") == dm_ts]
    # Made again after each Retry-After, through the bucket, until it went through: once.
    assert [c.status for c in updates] == [429] * 5 + [200]
    for before, after in itertools.pairwise(updates):
        assert after.timestamp >= before.timestamp + 2
    assert job_state == ("done", 1)  # the job was not handed back or done a second time
    # The dispatcher tried while the workspace was paused, and waited for its Retry-After.
    [card] = [c for c in sent if c.method == "chat.update" and c.args["ts"] == scenario.card_ts]
    assert dispatched_at == [updates[0].timestamp]
    assert card.status == 200
    assert card.timestamp >= updates[0].timestamp + 2
