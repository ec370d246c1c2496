"""Slack as a channel, against the local stand-in: addresses, sending, finding, typed failures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk import WebClient

from bot.channels.base import (
    Contact,
    CredentialsRefused,
    Message,
    RecipientUnreachable,
    Sent,
    TransientError,
)
from bot.channels.slack import SlackChannel, make_retry_handlers
from bot.delivery.metadata import alert_tag, prompt_tag
from bot.slack_standin import SlackStandIn, StandInUser
from rota.models import Person

TOKEN = "xoxb-channel-test"
NOW = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    users = [
        StandInUser(id="U0ANN", name="ann", email="ann@nhs.example"),
        StandInUser(id="U0BOB", name="bob", email="bob@nhs.example", deleted=True),
    ]
    with SlackStandIn(users=users, channels=["C0EDT"], clock=NOW.timestamp) as server:
        yield server


@pytest.fixture
def slack(standin: SlackStandIn) -> SlackChannel:
    client = WebClient(
        base_url=standin.url, token=TOKEN, timeout=2, retry_handlers=make_retry_handlers()
    )
    return SlackChannel(client)


def message(tag=None) -> Message:
    return Message(
        "Handover referral HO-1: please respond",
        [{"type": "section", "text": {"type": "mrkdwn", "text": "Referral HO-1"}}],
        tag or prompt_tag("HO-1", 7),
    )


def test_a_person_is_their_stored_slack_user_else_found_by_email(slack: SlackChannel) -> None:
    assert slack.address_of(Contact("hv-ann", "U0ANN", "ann@nhs.example")) == "U0ANN"
    assert slack.address_of(Contact("hv-ann", None, "ann@nhs.example")) is None
    assert slack.look_up(Contact("hv-ann", None, "ann@nhs.example")) == "U0ANN"
    person = Person(person_id="hv-ann", slack_user=None, slack_user_found=None)
    slack.remember(person, "U0ANN")
    assert (person.slack_user, person.slack_user_found, person.slack_user_id) == (
        None,
        "U0ANN",
        "U0ANN",
    )


@pytest.mark.parametrize(
    ("email", "error"), [(None, "no_slack_user"), ("nobody@nhs.example", "users_not_found")]
)
def test_nobody_to_find_is_unreachable(slack: SlackChannel, email: str | None, error: str) -> None:
    with pytest.raises(RecipientUnreachable) as raised:
        slack.look_up(Contact("hv-x", None, email))
    assert raised.value.error == error


def test_a_dm_sent_to_a_user_is_found_by_its_tag_and_nothing_else(
    slack: SlackChannel, standin: SlackStandIn
) -> None:
    sent = slack.send("U0ANN", message())
    dm = standin.dm_channel_for("U0ANN")
    assert sent == Sent(dm, sent.ts)
    [stored] = standin.messages(dm)
    assert stored["metadata"] == {
        "event_type": "handover_prompt",
        "event_payload": {"referral_id": "HO-1", "prompt_id": 7},
    }
    since = NOW - timedelta(minutes=10)
    assert slack.find("U0ANN", prompt_tag("HO-1", 7), since) == sent
    assert slack.find("U0ANN", prompt_tag("HO-1", 8), since) is None
    assert slack.find("U0ANN", alert_tag("on_call", "HO-1", 7), since) is None  # another type
    assert slack.find("U0ANN", prompt_tag("HO-1", 7), NOW + timedelta(seconds=1)) is None
    assert slack.find(dm, prompt_tag("HO-1", 7), None) == sent  # the conversation itself


def test_another_copy_of_a_row_is_found_and_ours_deleted(
    slack: SlackChannel, standin: SlackStandIn
) -> None:
    theirs = slack.send("U0ANN", message())
    ours = slack.send("U0ANN", message())  # the same row, posted late by a frozen dispatcher
    since = NOW - timedelta(minutes=10)
    assert slack.find("U0ANN", prompt_tag("HO-1", 7), since) == ours  # the newest first
    assert slack.find("U0ANN", prompt_tag("HO-1", 7), since, other_than=ours) == theirs
    assert slack.delete(ours) is True
    assert slack.delete(ours) is True  # already gone: as good as deleted
    assert [m["ts"] for m in standin.messages(theirs.conversation)] == [theirs.ts]
    assert slack.find("U0ANN", prompt_tag("HO-1", 7), since, other_than=theirs) is None


def test_an_update_replaces_the_message(slack: SlackChannel, standin: SlackStandIn) -> None:
    sent = slack.send("C0EDT", message(alert_tag("on_call", "HO-1", 3)))
    changed = Message("Handover referral HO-1: updated", [], alert_tag("on_call", "HO-1", 3))
    assert slack.update(sent, changed) == sent
    [stored] = standin.messages("C0EDT")
    assert stored["text"] == "Handover referral HO-1: updated"


def test_a_deactivated_recipient_is_unreachable_but_a_dead_bot_refused(
    slack: SlackChannel, standin: SlackStandIn
) -> None:
    standin.fail_with_error("chat.postMessage", "account_inactive")
    with pytest.raises(RecipientUnreachable) as raised:
        slack.send("U0ANN", message())
    assert not isinstance(raised.value, CredentialsRefused)
    assert raised.value.error == "account_inactive"

    standin.revoke_token(TOKEN)
    standin.fail_with_error("chat.postMessage", "account_inactive")
    with pytest.raises(CredentialsRefused):
        slack.send("U0ANN", message())


def test_a_revoked_token_is_refused_credentials(slack: SlackChannel, standin: SlackStandIn):
    standin.revoke_token(TOKEN)
    with pytest.raises(CredentialsRefused) as raised:
        slack.send("C0EDT", message())
    assert raised.value.error == "token_revoked"


def test_a_post_that_may_have_been_stored_is_an_ambiguous_transient_failure(
    slack: SlackChannel, standin: SlackStandIn
) -> None:
    standin.fail_with_status("chat.postMessage", 500, after_apply=True)
    with pytest.raises(TransientError) as raised:
        slack.send("C0EDT", message())
    assert (raised.value.ambiguous, raised.value.unreachable) == (True, False)
    assert len(standin.messages("C0EDT")) == 1  # it was stored: look before sending again


def test_rate_limits_carry_slacks_wait(standin: SlackStandIn) -> None:
    # Without slack_sdk's retry handlers (which wait out a few 429s themselves).
    slack = SlackChannel(WebClient(base_url=standin.url, token=TOKEN, timeout=2))
    standin.rate_limit_storm("chat.postMessage", count=1, retry_after=7)
    with pytest.raises(TransientError) as raised:
        slack.send("C0EDT", message())
    assert (raised.value.error, raised.value.retry_after, raised.value.ambiguous) == (
        "ratelimited",
        7.0,
        False,
    )


def test_no_connection_at_all_is_unreachable_and_certainly_not_sent() -> None:
    client = WebClient(base_url="http://127.0.0.1:9/api/", token=TOKEN, timeout=1)
    with pytest.raises(TransientError) as raised:
        SlackChannel(client).send("C0EDT", message())
    assert raised.value.unreachable and not raised.value.ambiguous
