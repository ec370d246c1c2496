"""Email behind the same outbox: chosen by the rota's `contact` rule, retried, never dropped.

The dispatcher against the Slack stand-in and a real SMTP server (the local mail relay): a
person who asked for email gets it; one Slack does not know gets email instead of being passed
over; a relay that drops the line after taking the message gets it again under the same
Message-ID, and the log says so; a refused mailbox is a delivery failure the EDT hears of; a
`slack+email` person gets both; a reminder follows the prompt's channel.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.delivery.dispatcher import Dispatcher
from bot.delivery.kinds import OutboxKind, RowState
from bot.mail_standin import MailStandIn
from bot.models import OutboxMessage
from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from rota.models import RotaVersion
from tests.bot.delivery.dispatch_fixtures import (
    EDT,
    MONDAY_9,
    TOKEN,
    add_prompt_for,
    add_referral,
    events,
    make_dispatcher,
    run_until_quiet,
)
from tests.rota.factories import new_person, new_team

PUBLIC_URL = "https://handover.wexcombe.example"
SAM = "sam.bell@riverside.nhs.example"
NOBODY = "no.slack@practice.nhs.example"
RIA = "ria.khan@nhs.example"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY_9)


@pytest.fixture
def slack(clock: FixedClock) -> Iterator[SlackStandIn]:
    users = [StandInUser(id="U0RIA1", name="ria", email=RIA)]
    with SlackStandIn(users=users, channels=[EDT], clock=lambda: clock.now().timestamp()) as s:
        yield s


@pytest.fixture
def settings(db_url: str, slack: SlackStandIn, relay: MailStandIn) -> Settings:
    return Settings(
        database_url=db_url,
        slack_bot_token=TOKEN,
        slack_signing_secret="signing-secret-of-the-test-app",
        slack_api_url=slack.url,
        edt_channel=EDT,
        smtp_url=relay.url,
        mail_from="Handover <handover@wexcombe.example>",
        public_url=PUBLIC_URL,
    )


def add_people(factory: sessionmaker[Session]) -> None:
    """Sam (email only), Noor (contact slack, unknown to Slack), Ria (slack+email)."""
    with factory.begin() as session:
        session.add(RotaVersion(version=1, imported_at=MONDAY_9, files="test", summary="{}"))
        session.add(new_team("gp-riverside", name="Riverside Medical Practice", hours=None))
        session.flush()
        for person_id, email, slack_user, contact in (
            ("gp-sam", SAM, None, "email"),
            ("gp-noor", NOBODY, None, "slack"),
            ("hv-ria", RIA, "U0RIA1", "slack+email"),
        ):
            session.add(
                new_person(
                    person_id,
                    "gp-riverside",
                    name=person_id,
                    email=email,
                    slack_user=slack_user,
                    contact=contact,
                )
            )
        session.flush()
        add_referral(session)


def prompt(factory: sessionmaker[Session], person_id: str, position: int = 0) -> int:
    with factory.begin() as session:
        return add_prompt_for(session, person_id, position=position)


def detail(event) -> dict:
    return json.loads(event.detail)


def message_id(prompt_id: int) -> str:
    return f"<outbox-{prompt_id}.HO-K7M3QX@handover.wexcombe.example>"


def test_a_person_who_asked_for_email_is_prompted_by_email(
    session_factory, slack: SlackStandIn, relay: MailStandIn, settings: Settings, clock
) -> None:
    add_people(session_factory)
    prompt_id = prompt(session_factory, "gp-sam")
    stats = make_dispatcher(settings, session_factory, clock).run_once()
    assert (stats.sent, stats.cards) == (1, 1)
    [mail] = relay.messages(to=SAM)
    assert mail.message_id == message_id(prompt_id)
    assert mail.email["Subject"] == "Handover referral HO-K7M3QX: please respond"
    assert f"{PUBLIC_URL}/respond/" in mail.body()
    [sent] = events(session_factory, "prompt_sent")
    assert sent.recipient == "gp-sam" and sent.at == MONDAY_9
    assert {k: detail(sent)[k] for k in ("channel", "to", "message_id")} == {
        "channel": "email",
        "to": SAM,
        "message_id": message_id(prompt_id),
    }
    # Nothing went to Slack but the EDT card, which names Sam by her rota id.
    posts = slack.calls("chat.postMessage")
    assert [c.args["channel"] for c in posts] == [EDT]
    assert "`gp-sam` by email" in json.dumps(posts[0].args["blocks"])


def test_someone_slack_does_not_know_gets_email_instead_of_being_passed_over(
    session_factory, slack: SlackStandIn, relay: MailStandIn, settings: Settings, clock
) -> None:
    add_people(session_factory)
    prompt_id = prompt(session_factory, "gp-noor")
    stats = make_dispatcher(settings, session_factory, clock).run_once()
    assert (stats.sent, stats.failed) == (1, 0)
    assert [c.args["email"] for c in slack.calls("users.lookupByEmail")] == [NOBODY]
    [mail] = relay.messages(to=NOBODY)
    assert mail.message_id == message_id(prompt_id)
    [sent] = events(session_factory, "prompt_sent")
    assert detail(sent)["channel"] == "email"
    assert detail(sent)["unreachable_on"] == {"slack": "users_not_found"}
    assert events(session_factory, "prompt_failed") == []


def test_a_dropped_connection_sends_it_again_with_the_same_message_id_and_says_so(
    session_factory, relay: MailStandIn, settings: Settings, clock
) -> None:
    add_people(session_factory)
    prompt_id = prompt(session_factory, "gp-sam")
    relay.drop_after_data()
    dispatcher = make_dispatcher(settings, session_factory, clock)
    assert dispatcher.run_once().retrying == 1
    [failed] = events(session_factory, "prompt_failed")
    assert detail(failed) | {"retry_at": None} == {
        "kind": "prompt",
        "reason": "smtp:SMTPServerDisconnected",
        "attempts": 1,
        "will_retry": True,
        "prompt_id": prompt_id,
        "retry_at": None,
    }
    # Default backoff: 30 s.
    clock.set(MONDAY_9 + timedelta(seconds=30))
    assert dispatcher.run_once().sent == 1
    mails = relay.messages(to=SAM)
    assert [(m.message_id, m.dropped) for m in mails] == [
        (message_id(prompt_id), True),
        (message_id(prompt_id), False),
    ]
    assert mails[0].body() == mails[1].body()
    [sent] = events(session_factory, "prompt_sent")
    assert detail(sent)["sent_again"] is True
    assert detail(sent)["message_id"] == message_id(prompt_id)


def test_a_deferral_is_retried_and_a_refused_mailbox_is_passed_over_with_an_alarm(
    session_factory, slack: SlackStandIn, relay: MailStandIn, settings: Settings, clock
) -> None:
    add_people(session_factory)
    deferred = prompt(session_factory, "gp-sam")
    refused = prompt(session_factory, "gp-noor", position=1)
    relay.defer()
    relay.refuse(NOBODY)
    dispatcher = make_dispatcher(settings, session_factory, clock)
    run_until_quiet(dispatcher, clock)
    with session_factory() as session:
        assert session.get(OutboxMessage, deferred).state == RowState.SENT
        assert session.get(OutboxMessage, refused).state == RowState.FAILED
    failures = [
        (e.recipient, detail(e)["reason"], detail(e)["will_retry"])
        for e in events(session_factory, "prompt_failed")
    ]
    assert failures == [("gp-sam", "smtp:451", True)]
    # Neither Slack nor email reaches gp-noor: passed over, and the EDT channel is told.
    [unreachable] = events(session_factory, "unreachable")
    assert unreachable.recipient == "gp-noor"
    assert (detail(unreachable)["reason"], detail(unreachable)["channels"]) == (
        "smtp:550",
        ["slack", "email"],
    )
    [alert] = [
        m
        for m in slack.messages(EDT)
        if m["metadata"]["event_type"] == "handover_alert"
        and m["metadata"]["event_payload"]["kind"] == "unreachable"
    ]
    text = json.dumps(alert["blocks"])
    assert "`gp-noor` could not be reached by Slack or email" in text
    assert "The mail relay said: `smtp:550`" in text


def test_slack_and_email_gets_both_the_same_message(
    session_factory, slack: SlackStandIn, relay: MailStandIn, settings: Settings, clock
) -> None:
    add_people(session_factory)
    prompt_id = prompt(session_factory, "hv-ria")
    stats = make_dispatcher(settings, session_factory, clock).run_once()
    assert stats.sent == 1
    [dm] = slack.messages(slack.dm_channel_for("U0RIA1"))
    [mail] = relay.messages(to=RIA)
    assert mail.email["Subject"] == dm["text"]
    assert mail.message_id == message_id(prompt_id)  # the prompt's, as a copy of it
    [sent] = events(session_factory, "prompt_sent")
    assert detail(sent)["copies"] == ["email"]
    assert detail(sent)["channel"] == slack.dm_channel_for("U0RIA1")
    with session_factory() as session:
        [copy] = session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.COPY)
        ).all()
        assert (copy.state, copy.channel, copy.address) == (RowState.SENT, "email", RIA)


def test_a_reminder_follows_the_prompt_by_email(
    session_factory, relay: MailStandIn, settings: Settings, clock
) -> None:
    add_people(session_factory)
    prompt_id = prompt(session_factory, "gp-sam")
    dispatcher = make_dispatcher(settings, session_factory, clock)
    dispatcher.run_once()
    clock.set(MONDAY_9 + timedelta(minutes=60))  # +60 working minutes: the reminder
    dispatcher.run_once()
    dispatcher.run_once()  # the step's message row
    reminder = relay.messages(to=SAM)[-1]
    assert reminder.email["Subject"] == "Handover referral HO-K7M3QX: reminder, please respond"
    assert reminder.email["References"] == message_id(prompt_id)
    [logged] = events(session_factory, "reminder_sent")
    assert logged.at == datetime(2027, 1, 11, 10, 0, tzinfo=UTC)
    assert detail(logged)["channel"] == "email" and detail(logged)["delivered"] is True


def test_without_smtp_an_email_contact_is_still_tried_in_slack(
    session_factory, slack: SlackStandIn, relay: MailStandIn, settings: Settings, clock
) -> None:
    from dataclasses import replace

    add_people(session_factory)
    prompt(session_factory, "hv-ria")
    plain = replace(settings, smtp_url=None)
    client_dispatcher = make_dispatcher(plain, session_factory, clock)
    assert isinstance(client_dispatcher, Dispatcher)
    assert client_dispatcher.run_once().sent == 1
    assert relay.messages() == []
    assert len(slack.messages(slack.dm_channel_for("U0RIA1"))) == 1


def test_a_copy_the_relay_refuses_is_put_before_the_edt_channel_without_paging(
    session_factory, slack: SlackStandIn, relay: MailStandIn, settings: Settings, clock
) -> None:
    add_people(session_factory)
    prompt(session_factory, "hv-ria")
    relay.refuse(RIA)
    make_dispatcher(settings, session_factory, clock).run_once()
    assert len(slack.messages(slack.dm_channel_for("U0RIA1"))) == 1  # Ria has it by Slack
    [failed] = events(session_factory, "prompt_failed")
    assert (detail(failed)["kind"], detail(failed)["reason"]) == ("copy", "smtp:550")
    [alert] = [
        m
        for m in slack.messages(EDT)
        if m["metadata"]["event_type"] == "handover_alert"
        and m["metadata"]["event_payload"]["kind"] == "delivery_failure"
    ]
    assert alert["text"] == "Handover referral HO-K7M3QX: message not delivered"
    assert alert["blocks"][1]["text"]["text"] == (
        "The copy by email for `hv-ria` (target `person:hv-ria`) could not be delivered; they "
        "have the message by their first channel.\nThe mail relay said: `smtp:550`"
    )
