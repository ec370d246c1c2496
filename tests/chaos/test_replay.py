"""Replays: a correctly signed Slack request captured and sent again within Slack's 5-minute
signature window is answered once (the auditor's `/handover log`, replayed twice, was answered
three times). The same words signed again at another second are a new request, answered again.
SQLite and PostgreSQL, through real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.models import AuditEvent, Referral, Response, SlackJob, SlackRequest
from handlers import ids
from handlers.blocks.response import (
    ACTION_CONTACT_BY,
    ACTION_METHOD,
    BLOCK_CONTACT_BY,
    BLOCK_METHOD,
)
from tests.handlers.slack_payloads import (
    Harness,
    Scenario,
    block_actions,
    build_scenario,
    running_bot,
    sign,
    slack_user,
    slash_command,
    view_submission,
    wait_for,
)

pytestmark = pytest.mark.chaos

FORM = "application/x-www-form-urlencoded"
REPLAYS = 2


@pytest.fixture
def bot(session_factory: sessionmaker[Session]) -> Iterator[Harness]:
    with running_bot(session_factory) as harness:
        yield harness


@pytest.fixture
def scenario(bot: Harness, session_factory: sessionmaker[Session]) -> Scenario:
    return build_scenario(session_factory, bot.client)


def replayed(bot: Harness, body: bytes, headers: dict[str, str]) -> list[int]:
    """Send one signed request, then the very same bytes and headers REPLAYS more times."""
    return [bot.post(body, FORM, headers).status for _ in range(1 + REPLAYS)]


def audit_events(factory: sessionmaker[Session], event: str) -> int:
    with factory() as session:
        return session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.event == event)
        )


def command(bot: Harness, user: str, text: str) -> tuple[bytes, dict[str, str], str]:
    url = bot.catcher.new_url()
    body = urlencode(slash_command(slack_user(user), text, response_url=url)).encode()
    return body, sign(body), url


def settle(bot: Harness) -> None:
    """Bolt answers after ack, in a thread: give a wrongly processed replay time to show."""
    time.sleep(0.5)


def test_a_replayed_log_command_is_answered_once(bot: Harness, scenario: Scenario) -> None:
    body, headers, url = command(bot, "edt-mgr", "log open")
    assert replayed(bot, body, headers) == [200, 200, 200]
    [answer] = wait_for(lambda: bot.catcher.answers(url))
    settle(bot)
    assert len(bot.catcher.answers(url)) == 1
    assert answer["text"] == "1 open referrals"


def test_a_replayed_close_is_carried_out_and_answered_once(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    body, headers, url = command(bot, "edt-amy", f"close {scenario.referral_id} duplicate")
    assert replayed(bot, body, headers) == [200, 200, 200]
    [answer] = wait_for(lambda: bot.catcher.answers(url))
    settle(bot)
    assert answer["text"].startswith(f"Referral {scenario.referral_id} is closed.")
    assert len(bot.catcher.answers(url)) == 1  # not "already closed" twice more
    assert audit_events(session_factory, "referral_closed") == 1
    with session_factory() as session:
        assert session.get(Referral, scenario.referral_id).status == "closed"
        # One job: the replays' signature was already in slack_jobs (none in slack_requests).
        [(kind, state, payload)] = session.execute(
            select(SlackJob.kind, SlackJob.state, SlackJob.payload)
        ).all()
        assert session.scalar(select(func.count()).select_from(SlackRequest)) == 0
    assert (kind, state) == ("handover_command_close", "done")
    assert "duplicate" not in payload and "response_url" not in payload


def test_a_replayed_button_click_is_handled_once(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    payload = block_actions(
        slack_user("hv-kpatel"), ids.ACK, str(scenario.prompt_id),
        channel_id=scenario.dm_channel, message_ts=scenario.dm_ts,
    )  # fmt: skip
    body = urlencode({"payload": json.dumps(payload)}).encode()
    assert replayed(bot, body, sign(body)) == [200, 200, 200]
    wait_for(lambda: bot.calls("chat.update"))
    settle(bot)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 1
    assert audit_events(session_factory, "acknowledged") == 1
    assert bot.standin.ephemerals(slack_user("hv-kpatel")) == []  # no "already answered"


def test_a_replayed_modal_submission_is_recorded_once(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    values: dict[str, Any] = {
        BLOCK_CONTACT_BY: {
            ACTION_CONTACT_BY: {"selected_option": {"value": "2026-11-16T14:00:00+00:00"}}
        },
        BLOCK_METHOD: {ACTION_METHOD: {"selected_option": {"value": "phone"}}},
    }
    payload = view_submission(
        slack_user("hv-kpatel"), ids.HAS_INFO_MODAL,
        private_metadata=json.dumps({"prompt_id": scenario.prompt_id}), values=values,
    )  # fmt: skip
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = sign(body)
    answers = [bot.post(body, FORM, headers) for _ in range(1 + REPLAYS)]
    assert [a.status for a in answers] == [200, 200, 200]
    assert [a.body for a in answers[1:]] == [b"", b""]  # nothing said to the replayer
    settle(bot)
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 1
    assert audit_events(session_factory, "has_information") == 1


def test_the_same_words_signed_again_are_a_new_request(bot: Harness, scenario: Scenario) -> None:
    url = bot.catcher.new_url()
    body = urlencode(slash_command(slack_user("edt-mgr"), "help", response_url=url)).encode()
    now = int(time.time())
    assert bot.post(body, FORM, sign(body, timestamp=now - 1)).status == 200
    assert bot.post(body, FORM, sign(body, timestamp=now)).status == 200
    assert len(wait_for(lambda: len(bot.catcher.answers(url)) == 2 and bot.catcher.answers(url)))


def test_a_replay_after_the_window_is_refused_by_its_signature(
    bot: Harness, scenario: Scenario
) -> None:
    body, _, url = command(bot, "edt-mgr", "log open")
    stale = sign(body, timestamp=int(time.time()) - 301)
    answer = bot.post(body, FORM, stale)
    assert (answer.status, answer.json) == (401, {"error": "stale X-Slack-Request-Timestamp"})
    settle(bot)
    assert bot.catcher.answers(url) == []
