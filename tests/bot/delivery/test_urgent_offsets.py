"""An urgent referral escalates on its own offsets (+15/+30/+60 working minutes), a standard
one on +60/+120/+240; both breach at the end of the recipient's own working day. Through the
dispatcher and the Slack stand-in, at exact instants, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.models import Referral
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from rota.models import Person
from tests.bot.delivery.dispatch_fixtures import (
    MONDAY_9,
    add_prompt_for,
    add_referral,
    add_rota,
    events,
    make_dispatcher,
    run_until_quiet,
)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2027, 1, 11, hour, minute, tzinfo=UTC)  # Monday, GMT


@pytest.mark.parametrize(
    ("urgency", "respond_by", "steps"),
    [
        ("urgent", at(9, 15), [at(9, 15), at(9, 30), at(10)]),
        ("standard", at(16), [at(10), at(11), at(13)]),
    ],
)
def test_steps_fall_at_the_urgencys_offsets_and_the_breach_at_the_end_of_her_own_day(
    session_factory: sessionmaker[Session],
    slack: SlackStandIn,
    settings: Settings,
    clock: FixedClock,
    urgency: str,
    respond_by: datetime,
    steps: list[datetime],
) -> None:
    with session_factory.begin() as session:
        add_rota(session)
        # Jo works 08:00-16:00 in a 09:00-17:00 team.
        session.get(Person, "hv-jsmith").hours = "Mon-Fri 08:00-16:00"
        add_referral(session, urgency=urgency)
        add_prompt_for(session, "hv-jsmith", MONDAY_9)
    run_until_quiet(make_dispatcher(settings, session_factory, clock), clock, passes=30)

    [sent] = events(session_factory, "prompt_sent")
    assert sent.at == MONDAY_9
    assert json.loads(sent.detail)["respond_by"] == respond_by.isoformat()
    # Each step's own instant (the test clock then stands one second past it).
    performed = [
        (e.event, datetime.fromisoformat(json.loads(e.detail)["due_at"]), e.at)
        for e in events(
            session_factory, "reminder_sent", "escalated", "escalated_channel", "breach"
        )
    ]
    assert all(happened - due == timedelta(seconds=1) for _, due, happened in performed)
    assert [(name, due) for name, due, _ in performed] == [
        ("reminder_sent", steps[0]),
        ("escalated", steps[1]),
        ("escalated_channel", steps[2]),
        ("breach", at(16)),  # the end of Jo's own day, not her team's 17:00
    ]
    with session_factory() as session:
        assert session.get(Referral, "HO-K7M3QX").urgency == urgency
