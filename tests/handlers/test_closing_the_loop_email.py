"""Closing the loop for someone reached only by email, on SQLite and PostgreSQL: the MASH duty
holder has no Slack, gets the contact check through the local relay (bot/mail_standin.py) with a
signed link per answer, follows "Yes, contact made", and the log has `contact_confirmed` and no
`contact_missed` at the end of the working day (docs/closing-the-loop.md, docs/email.md).

The dispatcher runs its real passes at each instant, at the default settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.mail_standin import MailStandIn
from bot.web.http import create_web_app
from rota.models import Person
from tests.handlers.slack_payloads import Harness, Scenario, running_bot
from tests.handlers.test_closing_the_loop import (
    PHONE,
    dispatch,
    events,
    loop_messages,
    offer_information_by_10_by_phone,
    utc,
)
from tests.handlers.test_closing_the_loop import scenario as scenario  # the fixture

PUBLIC_URL = "https://handover.wexcombe.example"
DUTY_EMAIL = "mash-duty@example.org"


@pytest.fixture
def relay() -> Iterator[MailStandIn]:
    with MailStandIn() as relay:
        yield relay


@pytest.fixture
def bot(session_factory: sessionmaker[Session], relay: MailStandIn) -> Iterator[Harness]:
    with running_bot(
        session_factory,
        owner_team="mash",
        smtp_url=relay.url,
        mail_from="Handover <handover@wexcombe.example>",
        public_url=PUBLIC_URL,
    ) as harness:
        yield harness


def email_only(session_factory: sessionmaker[Session], person_id: str) -> None:
    with session_factory.begin() as session:
        person = session.get(Person, person_id)
        assert person is not None
        person.slack_user, person.slack_user_found, person.contact = None, None, "email"


def test_an_email_only_duty_holder_confirms_the_contact_by_its_link(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    relay: MailStandIn,
) -> None:
    email_only(session_factory, "mash-duty")
    offer_information_by_10_by_phone(bot, scenario)
    dispatch(bot, session_factory, utc(9, 12))
    dispatch(bot, session_factory, utc(10, 30))
    assert loop_messages(bot, "mash-duty") == []  # nothing in Slack: she has none
    [check] = [
        m for m in relay.messages(to=DUTY_EMAIL) if "did the contact happen" in m.email["Subject"]
    ]
    body = check.body()
    assert "only in Slack" not in body and "only in Slack" not in check.body("html")
    assert "Yes, contact made" in body and "No, contact missed" in body
    made, missed = re.findall(re.escape(PUBLIC_URL) + r"(/respond/[A-Za-z0-9_.\-]+)", body)[:2]
    assert made != missed

    web = create_web_app(bot.bolt, bot.services).test_client()
    page = web.get(made)
    assert page.status_code == 200
    assert "Did the contact happen?" in page.text and PHONE not in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    bot.clock.set(utc(11, 5))
    done = web.post(made, data={"csrf_token": csrf.group(1)})
    assert done.status_code == 303 and done.headers["Location"] == made
    assert "Thank you: your answer is recorded" in web.get(made).text

    [confirmed] = events(session_factory, "contact_confirmed")
    assert (confirmed.actor, confirmed.recipient, confirmed.at) == (
        "mash-duty",
        "hv-kpatel",
        utc(11, 5),
    )
    assert json.loads(confirmed.detail)["reason"] == "answered"
    # The other link now shows her answer and offers no form.
    second = web.get(missed)
    assert second.status_code == 200 and 'name="csrf_token"' not in second.text
    assert "<strong>Yes, contact made</strong>, by you (Mash Duty" in second.text
    dispatch(bot, session_factory, utc(17))
    dispatch(bot, session_factory, utc(17, 1))
    assert events(session_factory, "contact_missed") == []
    assert loop_messages(bot, "hv-kpatel", "contact_missed") == []
