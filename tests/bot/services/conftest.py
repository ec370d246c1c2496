"""The world of the service tests: the test scenario (tests/handlers/slack_payloads.py) on the
Slack stand-in, the settings the services take, and helpers to respond and count."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery.kinds import ResponseKind
from bot.services.responses import ResponseOutcome, record_response
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from rota.models import Person, Team
from tests.handlers.slack_payloads import (
    BOT_TOKEN,
    EDT_CHANNEL,
    NOW,
    Scenario,
    build_scenario,
    slack_user,
)

SETTINGS = Settings(edt_channel=EDT_CHANNEL, alert_roles=("edt_manager",))


@pytest.fixture
def scenario(session_factory: sessionmaker[Session]) -> Iterator[Scenario]:
    with SlackStandIn(channels=[EDT_CHANNEL], allow_unknown_users=True, rate_limit=None) as slack:
        yield build_scenario(session_factory, WebClient(base_url=slack.url, token=BOT_TOKEN))


def respond(
    session_factory: sessionmaker[Session],
    prompt_id: int | None,
    person_id: str,
    kind: str = ResponseKind.ACKNOWLEDGED,
    **answers: str,
) -> ResponseOutcome:
    with session_factory.begin() as session:
        return record_response(
            session,
            prompt_id,
            slack_user(person_id) if not person_id.startswith("U0") else person_id,
            kind,
            now=NOW,
            settings=SETTINGS,
            **answers,
        )


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def add_a_manager_in_a_team_of_their_own(
    session: Session, person_id: str, role: str, team_id: str, agency_type: str
) -> None:
    """A team no referral of the scenario names, and a person with the `manager` permission in
    it (the team names no manager)."""
    session.add(
        Team(team_id=team_id, name=team_id.title(), agency=agency_type, agency_type=agency_type,
             region="england", hours=None, manager_id=None)
    )  # fmt: skip
    session.flush()
    session.add(
        Person(person_id=person_id, name=person_id.title(), slack_user=slack_user(person_id),
               team_id=team_id, role=role, permissions="manager")
    )  # fmt: skip
    session.flush()
