"""The handler tests' bot and scenario (slack_payloads.py): the real Bolt app given signed
requests through `App.dispatch`, and the scenario's rota, referral and prompts. A module that
needs the bot served over HTTP, or another scenario, defines its own fixtures of these names."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.handlers.slack_payloads import Harness, Scenario, build_scenario, running_bot


@pytest.fixture
def bot(session_factory: sessionmaker[Session]) -> Iterator[Harness]:
    with running_bot(session_factory, in_process=True) as harness:
        yield harness


@pytest.fixture
def scenario(bot: Harness, session_factory: sessionmaker[Session]) -> Scenario:
    return build_scenario(session_factory, bot.client)
