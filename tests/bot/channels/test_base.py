"""A second channel behind the same interface: chosen per person, delivered by the same path.

`Notebook` keeps what it sends in memory, standing in for what email (a later channel) would
implement; nothing in the dispatcher, composing, escalation, the models or intake knows it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import (
    Channels,
    Contact,
    Message,
    RecipientUnreachable,
    Sent,
    TransientError,
)
from bot.channels.slack import SlackChannel
from bot.clock import FixedClock
from bot.delivery.dispatcher import Dispatcher
from bot.delivery.kinds import OutboxKind, RowState
from bot.delivery.metadata import MessageTag
from bot.models import AuditEvent, OutboxMessage
from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from rota.models import Person, RotaVersion
from tests.bot.factories import new_referral, new_target
from tests.rota.factories import new_person, new_team

MONDAY_9 = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)
TOKEN = "xoxb-two-channels"


class Notebook:
    """A channel kept in memory: a person's address is their email."""

    name = "notebook"
    searchable = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message, Sent]] = []
        self.drop_answers = 0  # sends that go through but whose answer is lost

    def address_of(self, contact: Contact) -> str | None:
        return contact.email

    def look_up(self, contact: Contact) -> str:
        raise RecipientUnreachable("no email", method="look_up", error="no_email")

    def remember(self, person: Person, address: str) -> None:
        """Nothing to store: the address is the rota's own."""

    def find(
        self,
        address: str,
        tag: MessageTag,
        since: datetime | None,
        *,
        other_than: Sent | None = None,
    ) -> Sent | None:
        for to, message, sent in self.sent:
            same = message.tag.event_type == tag.event_type and sent != other_than
            if to == address and same and message.tag.identity == tag.identity:
                return sent
        return None

    def delete(self, sent: Sent) -> bool:
        self.sent = [entry for entry in self.sent if entry[2] != sent]
        return True

    def send(self, address: str, message: Message) -> Sent:
        identity = ".".join(str(v) for v in message.tag.identity.values())
        sent = Sent(address, f"<{message.tag.event_type}.{identity}@handover.example>")
        self.sent.append((address, message, sent))
        if self.drop_answers:
            self.drop_answers -= 1
            raise TransientError("dropped", method="send", error="dropped", ambiguous=True)
        return sent

    def update(self, sent: Sent, message: Message) -> Sent:
        return self.send(sent.conversation, message)

    def describe(self, sent: Sent) -> dict[str, str]:
        return {"channel": self.name, "to": sent.conversation, "id": sent.ts}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY_9)


@pytest.fixture
def slack(clock: FixedClock) -> Iterator[SlackStandIn]:
    users = [StandInUser(id="U0HV1", name="jsmith")]
    with SlackStandIn(users=users, channels=["C0EDT"], clock=lambda: clock.now().timestamp()) as s:
        yield s


@pytest.fixture
def settings(db_url: str, slack: SlackStandIn) -> Settings:
    return Settings(
        database_url=db_url, slack_bot_token=TOKEN, slack_api_url=slack.url, edt_channel="C0EDT"
    )


def add_prompts(factory: sessionmaker[Session]) -> dict[str, int]:
    """One referral asking Jo Smith (in Slack) and Dr Lee (by email), both due now."""
    with factory.begin() as session:
        session.add(RotaVersion(version=1, imported_at=MONDAY_9, files="test", summary="{}"))
        session.add(new_team("hv-north"))
        session.flush()
        session.add(new_person("hv-jsmith", "hv-north", slack_user="U0HV1"))
        session.add(new_person("gp-lee", "hv-north", slack_user=None, email="g.lee@gp.example"))
        session.add(new_referral("HO-K7M3QX", MONDAY_9, external_ref="LCS-1", category="neglect"))
        session.flush()
        ids = {}
        for position, person_id in enumerate(("hv-jsmith", "gp-lee")):
            spec = f"person:{person_id}"
            target = new_target("HO-K7M3QX", spec, person_id, MONDAY_9, position=position)
            session.add(target)
            session.flush()
            row = OutboxMessage(
                referral_id="HO-K7M3QX", target_id=target.id, kind="prompt", due_at=MONDAY_9
            )
            session.add(row)
            session.flush()
            ids[person_id] = row.id
        return ids


def dispatcher_with(
    settings: Settings, factory: sessionmaker[Session], clock: FixedClock, notebook: Notebook
) -> Dispatcher:
    client = WebClient(base_url=settings.slack_api_url, token=TOKEN, timeout=2)
    channels = Channels(
        [SlackChannel(client), notebook],
        for_person=lambda contact: "notebook" if contact.person_id == "gp-lee" else None,
    )
    return Dispatcher(settings, factory, client, clock, instance_id="two", channels=channels)


def test_each_person_is_reached_by_their_own_channel_through_the_same_path(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    ids = add_prompts(session_factory)
    notebook = Notebook()
    stats = dispatcher_with(settings, session_factory, clock, notebook).run_once()
    assert (stats.sent, stats.cards) == (2, 1)

    [(address, message, sent)] = notebook.sent
    assert address == "g.lee@gp.example"
    assert message.tag.metadata == {
        "event_type": "handover_prompt",
        "event_payload": {"referral_id": "HO-K7M3QX", "prompt_id": ids["gp-lee"]},
    }
    assert message.text == "Handover referral HO-K7M3QX: please respond"
    assert [m["metadata"]["event_payload"].get("prompt_id") for m in slack.messages()] == [
        ids["hv-jsmith"],
        None,  # the card
    ]
    with session_factory() as session:
        rows = {r.id: r for r in session.scalars(select(OutboxMessage))}
        lee = rows[ids["gp-lee"]]
        assert (lee.state, lee.channel, lee.address, lee.message_ts) == (
            RowState.SENT,
            "notebook",
            "g.lee@gp.example",
            sent.ts,
        )
        assert rows[ids["hv-jsmith"]].channel == "slack"
        # Escalation is scheduled for both, whatever the channel.
        steps = [r for r in rows.values() if r.kind == OutboxKind.ESCALATION]
        assert sorted(r.target_id for r in steps) == sorted(rows[i].target_id for i in ids.values())
        logged = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "prompt_sent").order_by(AuditEvent.id)
        ).all()
    # Each channel says in the log where its message went.
    assert [(e.recipient, json.loads(e.detail)["channel"]) for e in logged] == [
        ("hv-jsmith", slack.dm_channel_for("U0HV1")),
        ("gp-lee", "notebook"),
    ]
    assert json.loads(logged[1].detail)["to"] == "g.lee@gp.example"


def test_an_ambiguous_failure_on_the_second_channel_is_found_not_sent_twice(
    session_factory, slack: SlackStandIn, settings: Settings, clock: FixedClock
) -> None:
    ids = add_prompts(session_factory)
    notebook = Notebook()
    notebook.drop_answers = 1
    dispatcher = dispatcher_with(settings, session_factory, clock, notebook)
    assert dispatcher.run_once().retrying == 1
    clock.set(MONDAY_9 + timedelta(minutes=1))
    stats = dispatcher.run_once()
    assert (stats.sent, stats.found_in_history) == (1, 1)
    assert [to for to, _, _ in notebook.sent] == ["g.lee@gp.example"]  # sent once
    with session_factory() as session:
        assert session.get(OutboxMessage, ids["gp-lee"]).state == RowState.SENT
