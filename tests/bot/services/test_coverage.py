"""The coverage rule (docs/coverage.md): the pure rule, and the redirect-then-breach story seen
the same way by App Home, /handover log, GET /api/referrals/{id} and handover report, on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.services import audit
from bot.services.coverage import (
    CoverageState,
    TargetOutcome,
    agency_coverage,
    coverage_for_referrals,
    referral_coverage,
    target_outcome,
)
from bot.services.intake import referral_detail
from bot.services.logbook import LogWindow, referral_history
from bot.services.reports import build_report, report_json
from bot.settings import Settings
from handlers.blocks.home import build_log_referral_message, coverage_line
from handlers.home import build_home_view
from rota.models import Person, RotaVersion, Team
from tests.bot.services.test_logbook import (
    LONDON,
    add_prompt,
    add_referral,
    add_response,
    add_target,
)

A, P, E = TargetOutcome.ANSWERED, TargetOutcome.OPEN, TargetOutcome.ENDED  # P: still pending


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        ([], CoverageState.NOT_ASKED),
        ([P], CoverageState.PENDING),
        ([E, P], CoverageState.PENDING),
        ([E, E], CoverageState.MISSED),
        ([E, A], CoverageState.COVERED),
        ([P, A, E], CoverageState.COVERED),
    ],
)
def test_agency_coverage(outcomes: list[TargetOutcome], state: CoverageState) -> None:
    assert agency_coverage(outcomes) == state


def test_target_outcome_acknowledged_and_redirected_are_not_answers() -> None:
    assert target_outcome("acknowledged", answered=False, breached=False) == P
    assert target_outcome("acknowledged", answered=False, breached=True) == E
    assert target_outcome("acknowledged", answered=True, breached=True) == A  # ack, then answer
    assert target_outcome("redirected", answered=False, breached=False) == E
    assert target_outcome("has_information", answered=False, breached=False) == A
    assert target_outcome("held", answered=False, breached=False) == P
    assert target_outcome("unroutable", answered=False, breached=False) == E


def test_a_redirect_to_another_agency_leaves_the_first_a_gap_not_pending_for_ever() -> None:
    # A health visitor redirects to a police officer: nobody of health is still asked, so health
    # is missed (docs/coverage.md), while the officer's open target leaves police pending.
    redirected = target_outcome("redirected", answered=False, breached=False)
    officer = target_outcome("prompted", answered=False, breached=False)
    states = referral_coverage([("health", redirected), ("police", officer)], referrer_agency=None)
    assert {a: str(s) for a, s in states.states.items()} == {
        "social_care": "not_asked",
        "police": "pending",
        "health": "missed",
    }


def test_the_referrer_covers_social_care_only_from_a_social_care_team() -> None:
    assert referral_coverage([], referrer_agency="social_care").states["social_care"] == "covered"
    assert referral_coverage([], referrer_agency="police").states["social_care"] == "not_asked"
    mixed = referral_coverage([("health", E), ("police", A)], referrer_agency=None)
    assert {a: str(s) for a, s in mixed.states.items()} == {
        "social_care": "not_asked",
        "police": "covered",
        "health": "missed",
    }


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def build_redirect_then_breach(session_factory: sessionmaker[Session]) -> None:
    """Sat: HO-RB1 asks the health visiting team and the GP. Mon 09:05 the health visiting
    manager redirects to a colleague; the colleague and the GP both breach at 17:00."""
    with session_factory.begin() as session:
        session.add(RotaVersion(version=1, imported_at=utc(1, 12), files="x", summary="{}"))
        for team_id, agency_type, hours, manager in (
            ("edt", "social_care", "none", None),
            ("hv-north", "health", None, "hv-mgr"),
            ("gp-x", "health", None, None),
        ):
            session.add(
                Team(team_id=team_id, name=team_id.upper(), agency="A", agency_type=agency_type,
                     region="england", hours=hours, manager_id=manager)
            )  # fmt: skip
        session.flush()
        for pid, team, perms, slack in (
            ("edt-amy", "edt", "referrer", "UAMY"),
            ("edt-mgr", "edt", "manager;oversight", "UEDTMGR"),
            ("hv-mgr", "hv-north", "manager", "UHVMGR"),
            ("hv-col", "hv-north", "", "UHVCOL"),
            ("gp-doc", "gp-x", "", "UGPDOC"),
        ):
            session.add(
                Person(person_id=pid, name=pid.title(), slack_user=slack, team_id=team,
                       role="worker", permissions=perms)
            )  # fmt: skip
        session.flush()
        referral = add_referral(session, "HO-RB1", utc(14, 2))
        team = add_target(session, referral, 0, "team:hv-north", "hv-mgr", utc(16, 9), "prompted")
        gp = add_target(session, referral, 1, "team:gp-x", "gp-doc", utc(16, 9), "prompted")
        prompt = add_prompt(session, team, "hv-mgr", utc(16, 9), utc(16, 9))
        add_prompt(session, gp, "gp-doc", utc(16, 9), utc(16, 9))
        add_response(session, team, prompt, "redirected", "hv-mgr", utc(16, 9, 5))
        colleague = add_target(
            session, referral, 2, "person:hv-col", "hv-col", utc(16, 9, 5), "prompted"
        )
        add_prompt(session, colleague, "hv-col", utc(16, 9, 5), utc(16, 9, 5))
        for target in ("person:hv-col", "team:gp-x"):
            audit.record(session, "breach", at=utc(16, 17), referral_id="HO-RB1", target=target,
                         actor="dispatcher", detail={"step": "breach"})  # fmt: skip


def test_redirect_then_breach_ends_health_missed_in_every_view(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    build_redirect_then_breach(session_factory)
    settings = Settings(database_url=db_url, slack_bot_token="xoxb-t", slack_signing_secret="s")
    now = utc(17, 9)
    with session_factory() as session:
        live = coverage_for_referrals(session, ["HO-RB1"], LONDON)["HO-RB1"]
        api = referral_detail(session, "HO-RB1", LONDON)
        history = referral_history(session, "HO-RB1", LONDON)
        home = build_home_view(session, "UEDTMGR", now, settings)
        report = build_report(session, LogWindow(), LONDON)
    assert {a: str(s) for a, s in live.states.items()} == {
        "social_care": "covered",
        "police": "not_asked",
        "health": "missed",
    }
    assert api is not None and api["coverage"] == {
        "social_care": "covered",
        "police": "not_asked",
        "health": "missed",
    }
    line = "Social care ✅ covered · Police ❌ not asked · Health 🚫 missed"
    assert coverage_line(live).startswith(line)
    assert line in json.dumps(home, ensure_ascii=False)
    assert history is not None
    assert line in json.dumps(build_log_referral_message(history, LONDON), ensure_ascii=False)
    figures = report_json(report, LONDON)
    assert figures["coverage"]["by_agency"]["health"] == {
        "covered": 0,
        "pending": 0,
        "missed": 1,
        "not_asked": 0,
    }
    # The redirect is not a 0-minute health answer; both breaches count for health, by team.
    assert figures["time_to_answer"] == {}
    assert figures["breaches"]["by_agency"]["health"] == 2
    assert figures["breaches"]["by_team"] == {"hv-north": 1, "gp-x": 1}
