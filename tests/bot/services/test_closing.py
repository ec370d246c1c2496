"""Closing a referral (`/handover close`): the close service on SQLite and PostgreSQL (no
HTTP)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from bot.models import AuditEvent, Referral, Target
from bot.services.closing import close_referral
from tests.bot.services.conftest import (
    SETTINGS,
    add_a_manager_in_a_team_of_their_own,
    count,
    respond,
)
from tests.handlers.slack_payloads import NOW, Scenario, slack_user


def test_close_keeps_responses_and_cancels_the_rest(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    assert respond(session_factory, scenario.prompt_id, "hv-kpatel").status == "recorded"
    with session_factory.begin() as session:
        outcome = close_referral(
            session,
            scenario.referral_id,
            slack_user("edt-mgr"),
            "  strategy   discussion held ",
            now=NOW,
            settings=SETTINGS,
        )
    assert (outcome.status, outcome.cancelled_prompts, outcome.cancelled_rows) == ("closed", 1, 1)
    assert outcome.reason == "strategy discussion held"
    with session_factory() as session:
        assert session.get(Target, scenario.target_id).state == "acknowledged"
        assert session.get(Target, scenario.held_target_id).state == "cancelled"
        assert session.get(Target, scenario.role_target_id).state == "cancelled"
        assert session.get(Referral, scenario.referral_id).closed_by == "edt-mgr"


def test_close_by_a_manager_of_an_unrelated_team_is_refused(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    """Need to know: a school head may not close a referral that does not concern her school."""
    with session_factory.begin() as session:
        add_a_manager_in_a_team_of_their_own(session, "head-sue", "head", "school", "education")
    with session_factory.begin() as session:
        refused = close_referral(
            session, scenario.referral_id, slack_user("head-sue"), "not ours", now=NOW,
            settings=SETTINGS,
        )  # fmt: skip
    assert refused.status == "forbidden"
    with session_factory() as session:
        assert session.get(Referral, scenario.referral_id).status == "open"
        assert count(session, AuditEvent) == 0
    with session_factory.begin() as session:
        # A manager of a team it concerns may.
        allowed = close_referral(
            session, scenario.referral_id, slack_user("hv-senior"), "held", now=NOW,
            settings=SETTINGS,
        )  # fmt: skip
    assert allowed.status == "closed"
