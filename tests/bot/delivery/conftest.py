"""The fixtures of the delivery tests' world (dispatch_fixtures.py): the test clock at Monday
09:00, the Slack stand-in on that clock, the settings that reach it, and a local mail relay for
the tests that email. A module with a world of its own defines its own fixtures of these
names."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.clock import FixedClock
from bot.mail_standin import MailStandIn
from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from tests.bot.delivery.dispatch_fixtures import EDT, MONDAY_9, TOKEN


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY_9)


@pytest.fixture
def slack(clock: FixedClock) -> Iterator[SlackStandIn]:
    """Jo Smith, Dr Lee (found by email), the EDT manager and Bob; the EDT channel."""
    users = [
        StandInUser(id="U0HV1", name="jsmith", email="jo.smith@nhs.example"),
        StandInUser(id="U0GP1", name="glee", email="g.lee@gp.example"),
        StandInUser(id="U0MGR", name="edtmgr", email="mgr@council.example"),
        StandInUser(id="U0BOB", name="bob", email="bob@council.example"),
    ]
    with SlackStandIn(
        users=users, channels=[EDT], clock=lambda: clock.now().timestamp()
    ) as standin:
        yield standin
        # Whatever a test did, the referral's summary never reached Slack.
        assert "SECRET-NARRATIVE" not in standin.all_text()


@pytest.fixture
def settings(db_url: str, slack: SlackStandIn) -> Settings:
    return Settings(
        database_url=db_url, slack_bot_token=TOKEN, slack_api_url=slack.url, edt_channel=EDT
    )


@pytest.fixture
def relay() -> Iterator[MailStandIn]:
    """A local SMTP relay (bot/mail_standin.py) that keeps what it is sent."""
    with MailStandIn() as relay:
        yield relay
