"""A `/handover` subcommand's work is a job in slack_jobs (handlers/command_jobs.py), on SQLite
and PostgreSQL: a close job run twice after a crash mid-job closes once, logs
`referral_closed` once and answers once; a runner whose lease ended meanwhile undoes nothing
and says nothing; a close claimed after its response_url has expired is still carried out and
answered in a DM, a reading command then is dropped and the user told in a DM to type it again;
a done or dropped job keeps nothing of the reason or the response_url.

Each job here is written ready an hour from now, so the harness's own runner (which reads the
real clock) never claims it: the test claims and runs it as runners would.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock, SystemClock
from bot.models import AuditEvent, OutboxMessage, Referral, SlackJob
from bot.slackjobs import queue
from bot.slackjobs.queue import ClaimedJob, add_jobs
from bot.slackjobs.runner import JobRunner
from bot.workspaces.oauth import WORKSPACE_KEY
from handlers.command_jobs import command_jobs
from handlers.commands import command_job
from tests.handlers.slack_payloads import Harness, Scenario, slack_user, wait_for

REASON = "Duplicate of LCS-2026-000122; child NARRATIVE-REASON-88 already allocated"
CLOSED_ONE_PROMPT = (
    "Referral HO-TEST01 is closed. Cancelled 1 prompt(s) still held and 2 other pending "
    "message(s). The reason is kept with the referral (never in Slack or the log)."
)


def write_close(bot: Harness, referral_id: str, *, issued: datetime) -> tuple[str, datetime]:
    """Amy's `/handover close REFERRAL_ID REASON`, typed at `issued`, written as its web
    process would (unsigned, as in Socket Mode) and ready an hour from now: its response_url
    and the instant runners may claim it."""
    url = bot.catcher.new_url()
    command = {
        "user_id": slack_user("edt-amy"),
        "channel_id": "C0SOMEWHERE",
        "response_url": url,
        WORKSPACE_KEY: None,
    }
    job = command_job(command, ["close", referral_id, *REASON.split()], None, now=issued)
    ready = SystemClock().now() + timedelta(hours=1)
    engine = bot.services.session_factory.kw["bind"]
    with engine.begin() as connection:
        assert add_jobs(connection, [job], now=ready) == [job]
    return url, ready


def claim(session_factory: sessionmaker[Session], runner: str, at: datetime) -> ClaimedJob:
    with session_factory.begin() as session:
        [job] = queue.claim_ready(
            session, at, instance_id=runner, limit=1, lease=queue.DEFAULT_LEASE
        )
    return job


def runner_at(bot: Harness, name: str, at: datetime) -> JobRunner:
    return JobRunner(
        bot.services.session_factory,
        command_jobs(bot.services, bot.client),
        instance_id=name,
        clock=bot.clock,
        wall_clock=FixedClock(at),
        workers=1,
    )


def job_rows(session_factory: sessionmaker[Session]) -> list[tuple[str, str, int, dict]]:
    with session_factory() as session:
        rows = session.scalars(select(SlackJob).order_by(SlackJob.id))
        return [(r.kind, r.state, r.attempts, json.loads(r.payload)) for r in rows]


def events(session_factory: sessionmaker[Session], name: str) -> list[AuditEvent]:
    with session_factory() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event == name)))


def public_payload(issued: datetime) -> dict:
    return {
        "user": slack_user("edt-amy"),
        "workspace": None,
        "channel": "C0SOMEWHERE",
        "issued_at": int(issued.timestamp()),
    }


def test_a_close_job_keeps_the_reason_only_until_its_work_uses_it(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    issued = SystemClock().now().replace(microsecond=0)
    url, ready = write_close(bot, scenario.referral_id, issued=issued)
    [(kind, state, attempts, payload)] = job_rows(session_factory)
    assert (kind, state, attempts) == ("handover_command_close", "waiting", 0)
    assert payload == {
        **public_payload(issued),
        "private": {"response_url": url, "args": [scenario.referral_id, *REASON.split()]},
    }

    assert runner_at(bot, "r1", ready).run_ready() == 1
    [answer] = bot.catcher.answers(url)
    assert (answer["text"], answer["response_type"]) == (CLOSED_ONE_PROMPT, "ephemeral")
    assert job_rows(session_factory) == [
        ("handover_command_close", "done", 1, public_payload(issued))
    ]
    with session_factory() as session:
        assert session.get(Referral, scenario.referral_id).close_reason == REASON


def test_a_close_job_run_again_after_a_crash_mid_job_closes_once_and_answers_once(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    issued = SystemClock().now()
    url, ready = write_close(bot, scenario.referral_id, issued=issued)
    works = command_jobs(bot.services, bot.client)
    # Runner a closes the referral and answers, then its process dies before it marks the job
    # done: the job is claimed again once a's lease has ended.
    held = claim(session_factory, "a", ready)
    works[held.kind](held)
    wait_for(lambda: bot.catcher.answers(url))
    again = ready + queue.DEFAULT_LEASE + timedelta(seconds=1)
    with caplog.at_level(logging.WARNING, logger="handlers.command_jobs"):
        assert runner_at(bot, "b", again).run_ready() == 1

    assert [m.getMessage() for m in caplog.records if m.name == "handlers.command_jobs"] == [
        f"slack job {held.id} (handover_command_close) was carried out by an earlier attempt: "
        "not again"
    ]
    assert [a["text"] for a in bot.catcher.answers(url)] == [CLOSED_ONE_PROMPT]
    assert [e.referral_id for e in events(session_factory, "referral_closed")] == [
        scenario.referral_id
    ]
    assert len(events(session_factory, "prompt_cancelled")) == 1
    assert job_rows(session_factory) == [
        ("handover_command_close", "done", 2, public_payload(issued))
    ]


def test_a_runner_whose_lease_ended_mid_job_closes_nothing_and_says_nothing(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    issued = SystemClock().now()
    url, ready = write_close(bot, scenario.referral_id, issued=issued)
    again = ready + queue.DEFAULT_LEASE + timedelta(seconds=1)
    late = claim(session_factory, "late", ready)  # then stalls past its lease...
    taken = claim(session_factory, "b", again)  # ...and runner b claims the job meanwhile

    # The late runner's close is rolled back (b holds the job), and it answers nothing.
    runner_at(bot, "late", ready)._run(late)
    with session_factory() as session:
        assert session.get(Referral, scenario.referral_id).status == "open"
        assert session.get(OutboxMessage, scenario.held_prompt_id).state == "pending"
    assert events(session_factory, "referral_closed") == []
    assert bot.catcher.answers(url) == []

    runner_at(bot, "b", again)._run(taken)
    assert [a["text"] for a in bot.catcher.answers(url)] == [CLOSED_ONE_PROMPT]
    assert len(events(session_factory, "referral_closed")) == 1
    assert events(session_factory, "slack_job_dropped") == []
    assert job_rows(session_factory) == [
        ("handover_command_close", "done", 2, public_payload(issued))
    ]


def test_a_reading_command_is_answered_only_by_the_runner_that_marks_it_done(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    url = bot.catcher.new_url()
    command = {"user_id": slack_user("edt-mgr"), "channel_id": "C0SOMEWHERE", "response_url": url}
    issued = SystemClock().now()
    job = command_job(command, ["oncall", "edt_manager"], None, now=issued)
    ready = issued + timedelta(hours=1)
    with session_factory.kw["bind"].begin() as connection:
        add_jobs(connection, [job], now=ready)
    again = ready + queue.DEFAULT_LEASE + timedelta(seconds=1)
    late = claim(session_factory, "late", ready)
    taken = claim(session_factory, "b", again)

    runner_at(bot, "late", ready)._run(late)  # its answer is ready; the job is b's now
    assert bot.catcher.answers(url) == []
    runner_at(bot, "b", again)._run(taken)
    [answer] = bot.catcher.answers(url)
    assert answer["text"].startswith("*On call at ")
    assert "`edt_manager`" in answer["text"]
    with session_factory() as session:
        [row] = session.scalars(select(SlackJob))
    assert (row.kind, row.state, row.attempts) == ("handover_command_oncall", "done", 2)
    assert json.loads(row.payload) == {
        "user": slack_user("edt-mgr"), "workspace": None, "channel": "C0SOMEWHERE",
        "issued_at": int(issued.timestamp()),
    }  # fmt: skip


def dm_texts(bot: Harness, person_id: str) -> list[str]:
    """The texts of the private notices in the person's DM with the app (their one section)."""
    channel = bot.standin.dm_channel_for(slack_user(person_id))
    messages = bot.standin.messages(channel) if channel else []
    assert all(m["text"] == "Handover notice" for m in messages)  # the notification
    return [block["text"]["text"] for m in messages for block in m["blocks"]]


def test_a_close_job_claimed_after_its_response_url_expired_is_carried_out_and_answered_in_a_dm(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    issued = SystemClock().now().replace(microsecond=0) - timedelta(minutes=31)
    url, ready = write_close(bot, scenario.referral_id, issued=issued)
    with caplog.at_level(logging.WARNING, logger="handlers.command_jobs"):
        assert runner_at(bot, "r1", ready).run_ready() == 1

    assert job_rows(session_factory) == [
        ("handover_command_close", "done", 1, public_payload(issued))
    ]
    with session_factory() as session:
        referral = session.get(Referral, scenario.referral_id)
        assert (referral.status, referral.close_reason) == ("closed", REASON)
        assert session.get(OutboxMessage, scenario.held_prompt_id).state == "cancelled"
    assert len(events(session_factory, "referral_closed")) == 1
    assert events(session_factory, "slack_job_dropped") == []
    assert bot.catcher.answers(url) == []
    assert dm_texts(bot, "edt-amy") == [
        f"Your `/handover close` of {issued:%H:%M} UTC was carried out late. {CLOSED_ONE_PROMPT}"
    ]
    [job_id] = [row.id for row in _jobs(session_factory)]
    assert [r.getMessage() for r in caplog.records if r.name == "handlers.command_jobs"] == [
        f"slack job {job_id} (handover_command_close) carried out 31 minutes after "
        "`/handover close`, past its response_url's 30: answered in a DM"
    ]
    assert REASON not in json.dumps(job_rows(session_factory))
    assert all(REASON not in text for text in dm_texts(bot, "edt-amy"))


def _jobs(session_factory: sessionmaker[Session]) -> list[SlackJob]:
    with session_factory() as session:
        return list(session.scalars(select(SlackJob).order_by(SlackJob.id)))


def test_a_reading_command_claimed_after_its_response_url_expired_is_dropped_and_the_user_told(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = bot.catcher.new_url()
    command = {"user_id": slack_user("edt-mgr"), "channel_id": "C0SOMEWHERE", "response_url": url}
    issued = SystemClock().now().replace(microsecond=0) - timedelta(minutes=31)
    expired = issued + timedelta(minutes=30)
    job = command_job(command, ["oncall", "edt_manager"], None, now=issued)
    ready = SystemClock().now() + timedelta(hours=1)
    with session_factory.kw["bind"].begin() as connection:
        add_jobs(connection, [job], now=ready)
    with caplog.at_level(logging.ERROR, logger="bot.slackjobs.runner"):
        assert runner_at(bot, "r1", ready).run_ready() == 1

    [(kind, state, attempts, payload)] = job_rows(session_factory)
    assert (kind, state, attempts) == ("handover_command_oncall", "dropped", 1)
    assert "private" not in payload
    [job_id] = [row.id for row in _jobs(session_factory)]
    [dropped] = events(session_factory, "slack_job_dropped")
    assert json.loads(dropped.detail) == {
        "job": job_id, "kind": "handover_command_oncall", "attempts": 1,
        "error": "ResponseUrlExpired",
    }  # fmt: skip
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"slack job {job_id} (handover_command_oncall) dropped unanswered: its response_url "
        f"expired at {expired:%Y-%m-%d %H:%M:%S} UTC, 30 minutes after `/handover oncall`, "
        "which was not carried out (the user was told in a DM to type it again)"
    ]
    assert bot.catcher.answers(url) == []
    assert dm_texts(bot, "edt-mgr") == [
        f"Your `/handover oncall` of {issued:%H:%M} UTC could not be answered in time. "
        "Please type it again."
    ]


def test_an_unknown_subcommand_is_a_help_job_that_keeps_nothing_typed() -> None:
    command = {"user_id": "U0AMY", "channel_id": "C1", "response_url": "https://hooks.x/1"}
    at = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    job = command_job(command, ["Jane", "Smith", "age", "4"], ("ab" * 32, 1764493200), now=at)
    assert (job.kind, job.signature, job.timestamp) == (
        "handover_command_help",
        "ab" * 32,
        1764493200,
    )
    assert job.payload == {
        "user": "U0AMY",
        "workspace": None,
        "channel": "C1",
        "issued_at": 1764493200,
        "private": {"response_url": "https://hooks.x/1", "args": []},
    }
