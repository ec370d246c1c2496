"""A click's or a slash command's job dropped after its last attempt is told to its user
(handlers/dropped_jobs.py), on SQLite and PostgreSQL: once, in a private notice in their DM
with the app that names the button or the subcommand and the minute, never the referral or
what was typed.

Each job here is written ready an hour from now, so the harness's own runner (which reads the
real clock) never claims it: the test's runner does, on a clock of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock, SystemClock
from bot.context import Services
from bot.slackjobs.queue import ClaimedJob, NewJob, add_jobs
from bot.slackjobs.runner import JobRunner
from bot.workspaces.oauth import WORKSPACE_KEY
from handlers import ids
from handlers.blocks.home import HOME_NEXT, HOME_PREVIOUS
from handlers.clicks import click_jobs
from handlers.command_jobs import command_jobs
from handlers.commands import command_job
from handlers.dropped_jobs import CLICK_LABELS, dropped_notice, notice_text
from tests.handlers.slack_payloads import Harness, Scenario, slack_user
from tests.handlers.test_command_jobs import REASON, dm_texts, job_rows


def write(bot: Harness, job: NewJob) -> datetime:
    """Write `job` ready an hour from now; the instant it is ready."""
    ready = SystemClock().now().replace(microsecond=0) + timedelta(hours=1)
    with bot.services.session_factory.kw["bind"].begin() as connection:
        assert add_jobs(connection, [job], now=ready) == [job]
    return ready


def run_until_dropped(bot: Harness, works: dict[str, Any], ready: datetime) -> None:
    """Every attempt of the one job, each after its backoff, by a runner that tells."""
    wall = FixedClock(ready)
    runner = JobRunner(
        bot.services.session_factory,
        works,
        instance_id="r1",
        clock=bot.clock,
        wall_clock=wall,
        workers=1,
        backoff=(timedelta(seconds=2),),
        tell_dropped=dropped_notice(bot.services, bot.client),
    )
    assert runner.run_ready() == 1
    wall.set(ready + timedelta(seconds=2))
    assert runner.run_ready() == 1
    wall.set(ready + timedelta(hours=1))
    assert runner.run_ready() == 0  # dropped: never claimed, nor told, again


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

    [(_, state, attempts, _)] = job_rows(session_factory)
    assert (state, attempts) == ("dropped", 2)
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

    [(kind, state, _, payload)] = job_rows(session_factory)
    assert (kind, state) == ("handover_command_close", "dropped")
    assert "private" not in payload
    [told] = dm_texts(bot, "edt-amy")
    assert told == (
        f"Your `/handover close` of {issued:%H:%M} UTC could not be carried out. "
        "Please type it again."
    )
    assert scenario.referral_id not in told and "NARRATIVE" not in told
    assert bot.catcher.answers(url) == []


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
