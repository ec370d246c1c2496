"""A click's or a slash command's job dropped after its last attempt is told to its user
(handlers/dropped_jobs.py), on SQLite and PostgreSQL: once, in a private notice in their DM
with the app that names the button or the subcommand and the minute, never the referral or
what was typed. The notice is a job written with the drop: a runner that dies after the drop
leaves it to another, a DM that Slack refuses for now is tried again after its backoff, and a
notice dropped itself makes no notice.

Each job here is written ready an hour from now, so the harness's own runner (which reads the
real clock) never claims it: the test's runner does, on a clock of its own.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock, SystemClock
from bot.context import Services
from bot.models import SlackJob
from bot.slack_standin.model import Fault
from bot.slackjobs import queue
from bot.slackjobs.queue import ClaimedJob, NewJob, add_jobs
from bot.slackjobs.runner import JobRunner, JobWork
from bot.workspaces.oauth import WORKSPACE_KEY
from handlers import ids
from handlers.blocks.home import HOME_NEXT, HOME_PREVIOUS
from handlers.clicks import click_jobs
from handlers.command_jobs import command_jobs
from handlers.commands import command_job
from handlers.dropped_jobs import (
    CLICK_LABELS,
    NOTICE_KIND,
    dropped_notice,
    notice_jobs,
    notice_text,
)
from tests.handlers.slack_payloads import Harness, Scenario, slack_user, wait_for
from tests.handlers.test_command_jobs import REASON, dm_texts, events, job_rows


def write(bot: Harness, job: NewJob) -> datetime:
    """Write `job` ready an hour from now; the instant it is ready."""
    ready = SystemClock().now().replace(microsecond=0) + timedelta(hours=1)
    with bot.services.session_factory.kw["bind"].begin() as connection:
        assert add_jobs(connection, [job], now=ready) == [job]
    return ready


def telling_runner(
    bot: Harness,
    works: dict[str, JobWork],
    wall: FixedClock,
    name: str = "r1",
    backoff: tuple[timedelta, ...] = (timedelta(seconds=2),),
) -> JobRunner:
    """A runner of `works` and the notices' work, on its own clock, that writes notices."""
    return JobRunner(
        bot.services.session_factory,
        {**works, **notice_jobs(bot.services, bot.client)},
        instance_id=name,
        clock=bot.clock,
        wall_clock=wall,
        workers=1,
        backoff=backoff,
        dropped_notice=dropped_notice,
    )


def run_until_dropped(bot: Harness, works: dict[str, Any], ready: datetime) -> None:
    """Every attempt of the one job, each after its backoff, then its notice's."""
    wall = FixedClock(ready)
    runner = telling_runner(bot, works, wall)
    assert runner.run_ready() == 1
    wall.set(ready + timedelta(seconds=2))
    assert runner.run_ready() == 1  # dropped, its notice written
    assert runner.run_ready() == 1  # the notice
    wall.set(ready + timedelta(hours=1))
    assert runner.run_ready() == 0  # dropped and told: never claimed, nor told, again


def notices(bot: Harness, person_id: str) -> list[str]:
    """The private notices in the person's DM with the app (whose notification names nothing),
    among whatever else it holds (their prompt)."""
    channel = bot.standin.dm_channel_for(slack_user(person_id))
    messages = bot.standin.messages(channel) if channel else []
    return [
        block["text"]["text"]
        for m in messages
        if m["text"] == "Handover notice"
        for block in m["blocks"]
    ]


def broken(job: ClaimedJob) -> None:
    raise RuntimeError("the database is down")


@pytest.mark.parametrize(
    ("kind", "label"),
    [(ids.ACK, "Acknowledge"), (HOME_NEXT, "Next")],
)
def test_a_dropped_click_is_told_to_its_clicker_once_naming_the_button(
    kind: str,
    label: str,
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
) -> None:
    clicker = slack_user("hv-kpatel")
    payload = {
        "user": clicker,
        "value": scenario.prompt_id,
        "channel": scenario.dm_channel,
        "message_ts": scenario.dm_ts,
        "workspace": None,
    }
    ready = write(bot, NewJob(kind=kind, payload=payload))
    run_until_dropped(bot, {kind: broken}, ready)

    [(_, state, attempts, _), notice] = job_rows(session_factory)
    assert (state, attempts) == ("dropped", 2)
    assert notice[:3] == (NOTICE_KIND, "done", 1)
    assert notices(bot, "hv-kpatel") == [
        f"Your click on “{label}” at {ready:%H:%M} UTC could not be carried out. "
        "Please click it again."
    ]


def test_a_dropped_close_is_told_to_whoever_typed_it_once_naming_nothing_typed(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_close(*args: object, **kwargs: object) -> str:
        raise RuntimeError("the database is down")

    monkeypatch.setattr("handlers.command_jobs.close_and_answer", failing_close)
    url = bot.catcher.new_url()
    command = {
        "user_id": slack_user("edt-amy"),
        "channel_id": "C0SOMEWHERE",
        "response_url": url,
        WORKSPACE_KEY: None,
    }
    issued = SystemClock().now().replace(microsecond=0)
    job = command_job(command, ["close", scenario.referral_id, *REASON.split()], None, now=issued)
    ready = write(bot, job)
    run_until_dropped(bot, command_jobs(bot.services, bot.client), ready)

    [(kind, state, _, payload), (notice_kind, notice_state, _, notice)] = job_rows(session_factory)
    assert (kind, state) == ("handover_command_close", "dropped")
    assert "private" not in payload
    [told] = dm_texts(bot, "edt-amy")
    # The notice's job holds what its DM needs and nothing else: nothing typed, no referral.
    assert (notice_kind, notice_state) == (NOTICE_KIND, "done")
    assert notice == {"user": slack_user("edt-amy"), "workspace": None, "text": told}
    assert told == (
        f"Your `/handover close` of {issued:%H:%M} UTC could not be carried out. "
        "Please type it again."
    )
    assert scenario.referral_id not in told and "NARRATIVE" not in told
    assert bot.catcher.answers(url) == []


class RunnerDied(BaseException):
    """The runner's process ends here: nothing after this runs in it (a kill, not an error)."""


def click_of(person_id: str, scenario: Scenario) -> NewJob:
    payload = {
        "user": slack_user(person_id),
        "value": scenario.prompt_id,
        "channel": scenario.dm_channel,
        "message_ts": scenario.dm_ts,
        "workspace": None,
    }
    return NewJob(kind=ids.ACK, payload=payload)


def told_of(ready: datetime) -> str:
    return (
        f"Your click on “Acknowledge” at {ready:%H:%M} UTC could not be carried out. "
        "Please click it again."
    )


def test_a_runner_that_dies_right_after_a_drop_commits_leaves_its_notice_to_another(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ready = write(bot, click_of("hv-kpatel", scenario))
    dropping: list[Session] = []
    drop = queue.drop

    def drop_and_remember(session: Session, *args: Any, **kwargs: Any) -> bool:
        dropping.append(session)
        return drop(session, *args, **kwargs)

    def die_once_committed(session: Session) -> None:
        # Once the drop's transaction is committed (not a SAVEPOINT inside it: audit.record's).
        if session in dropping and not session.in_nested_transaction():
            dropping.remove(session)
            raise RunnerDied

    monkeypatch.setattr(queue, "drop", drop_and_remember)
    factory = bot.services.session_factory
    event.listen(factory, "after_commit", die_once_committed)
    wall = FixedClock(ready)
    try:
        with pytest.raises(RunnerDied):
            telling_runner(bot, {ids.ACK: broken}, wall, "dies", backoff=()).run_ready()
    finally:
        event.remove(factory, "after_commit", die_once_committed)
    [(_, state, _, _), notice] = job_rows(session_factory)
    assert state == "dropped"
    assert notice[:3] == (NOTICE_KIND, "waiting", 0)  # written with the drop
    assert notices(bot, "hv-kpatel") == []
    # Another runner, which also dies holding the notice before its DM; the next one takes it
    # when that lease ends, and tells the clicker once.
    with session_factory.begin() as session:
        [held] = queue.claim_ready(
            session, wall.now(), instance_id="dead", limit=5, lease=queue.DEFAULT_LEASE
        )
    assert held.kind == NOTICE_KIND
    alive = telling_runner(bot, {ids.ACK: broken}, wall, "alive", backoff=())
    assert alive.run_ready() == 0
    wall.set(ready + queue.DEFAULT_LEASE + timedelta(seconds=1))
    assert alive.run_ready() == 1
    assert notices(bot, "hv-kpatel") == [told_of(ready)]
    wall.set(ready + timedelta(hours=1))
    assert alive.run_ready() == 0
    assert notices(bot, "hv-kpatel") == [told_of(ready)]
    assert [row[1:3] for row in job_rows(session_factory)] == [("dropped", 1), ("done", 2)]


@pytest.mark.parametrize(
    "outage",
    [
        Fault("status", method="chat.postMessage", status=500, count=2),
        Fault("ratelimit", method="chat.postMessage", retry_after=30, count=2),
    ],
    ids=["http-500", "ratelimited"],
)
def test_a_notice_slack_refuses_for_now_is_sent_once_after_its_backoff(
    outage: Fault, bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    ready = write(bot, click_of("hv-kpatel", scenario))
    wall = FixedClock(ready)
    runner = telling_runner(bot, {ids.ACK: broken}, wall, backoff=queue.BACKOFF)
    for wait in queue.BACKOFF:
        assert runner.run_ready() == 1
        wall.set(wall.now() + wait)
    assert runner.run_ready() == 1  # the click's last attempt: dropped, its notice written
    bot.standin.inject(replace(outage, channel=slack_user("hv-kpatel")))  # their DM alone
    assert runner.run_ready() == 1  # the notice: Slack refuses it
    assert job_rows(session_factory)[1][1:3] == ("waiting", 1)
    wall.set(wall.now() + queue.BACKOFF[0] - timedelta(seconds=1))
    assert runner.run_ready() == 0  # not before its backoff
    wall.set(wall.now() + timedelta(seconds=1))
    assert runner.run_ready() == 1  # refused again
    assert notices(bot, "hv-kpatel") == []
    wall.set(wall.now() + queue.BACKOFF[1])
    assert runner.run_ready() == 1  # Slack is back
    assert notices(bot, "hv-kpatel") == [told_of(ready)]
    assert job_rows(session_factory)[1][1:3] == ("done", 3)
    wall.set(wall.now() + timedelta(hours=1))
    assert runner.run_ready() == 0
    assert notices(bot, "hv-kpatel") == [told_of(ready)]


@pytest.mark.parametrize(
    ("outage", "attempts", "error"),
    [
        (Fault("status", method="chat.postMessage", status=503, count=2), 2, "SlackTransientError"),
        (Fault("error", method="chat.postMessage", error="account_inactive"), 1, "NoticeRefused"),
    ],
    ids=["every-attempt-fails", "refused-for-good"],
)
def test_a_notice_never_sent_is_dropped_and_makes_no_notice_of_its_own(
    outage: Fault,
    attempts: int,
    error: str,
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
) -> None:
    ready = write(bot, click_of("hv-kpatel", scenario))
    bot.standin.inject(replace(outage, channel=slack_user("hv-kpatel")))  # their DM alone
    wall = FixedClock(ready)
    runner = telling_runner(bot, {ids.ACK: broken}, wall)  # two attempts each
    assert runner.run_ready() == 1
    wall.set(ready + timedelta(seconds=2))
    assert runner.run_ready() == 1  # the click dropped, its notice written
    assert runner.run_ready() == 1  # the notice refused
    wall.set(ready + timedelta(seconds=4))
    assert runner.run_ready() == attempts - 1  # refused again, and dropped
    wall.set(ready + timedelta(hours=1))
    assert runner.run_ready() == 0  # nothing more: no notice of the notice
    rows = job_rows(session_factory)
    assert [row[:3] for row in rows] == [
        (ids.ACK, "dropped", 2),
        (NOTICE_KIND, "dropped", attempts),
    ]
    assert notices(bot, "hv-kpatel") == []
    dropped = [json.loads(e.detail) for e in events(session_factory, "slack_job_dropped")]
    assert [(d["kind"], d["error"]) for d in dropped] == [
        (ids.ACK, "RuntimeError"),
        (NOTICE_KIND, error),
    ]


def test_serves_runner_drops_a_job_on_its_last_attempt_and_sends_its_notice(
    bot: Harness, session_factory: sessionmaker[Session]
) -> None:
    # The harness's own runner, in its threads on the real clock, wired as `serve`'s: a job of
    # a kind it has no work for (a newer web process's), on its last attempt.
    clicker = slack_user("hv-kpatel")
    written = SystemClock().now()
    with bot.services.session_factory.kw["bind"].begin() as connection:
        job = NewJob(kind="handover_future", payload={"user": clicker, "workspace": None})
        add_jobs(connection, [job], now=written)
        connection.execute(update(SlackJob).values(attempts=queue.MAX_ATTEMPTS - 1))
    told = f"Your click at {written:%H:%M} UTC could not be carried out. Please click it again."
    assert wait_for(lambda: notices(bot, "hv-kpatel") == [told], timeout=15)
    wait_for(lambda: [row[1] for row in job_rows(session_factory)] == ["dropped", "done"])
    assert [row[:3] for row in job_rows(session_factory)] == [
        ("handover_future", "dropped", queue.MAX_ATTEMPTS),
        (NOTICE_KIND, "done", 1),
    ]


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        (ids.ACK, "Acknowledge"),
        (ids.NOT_KNOWN, "Not known to us"),
        (ids.ONCALL_ACK, "Acknowledge"),
        (ids.CONTACT_MADE, "Yes, contact made"),
        (ids.CONTACT_MISSED, "No, contact missed"),
        (HOME_PREVIOUS, "Previous"),
        (HOME_NEXT, "Next"),
    ],
)
def test_a_dropped_clicks_notice_names_its_buttons_label(kind: str, label: str) -> None:
    at = datetime(2027, 1, 11, 21, 7, tzinfo=UTC)
    dropped = ClaimedJob(7, kind, {"user": "U1"}, 5, "r1", at, at)
    assert notice_text(dropped) == (
        f"Your click on “{label}” at 21:07 UTC could not be carried out. Please click it again."
    )


def test_every_click_that_is_a_job_has_its_buttons_label() -> None:
    services = Services(settings=None, session_factory=None, clock=None)  # type: ignore[arg-type]
    assert set(click_jobs(services, None)) <= set(CLICK_LABELS)  # type: ignore[arg-type]
