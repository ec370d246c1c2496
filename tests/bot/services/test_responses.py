"""The response service on SQLite and PostgreSQL (no HTTP)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery.kinds import ResponseKind
from bot.models import AuditEvent, OutboxMessage, Response, Target
from bot.services.closing import close_referral
from bot.services.coverage import coverage_for_referrals
from bot.services.responses import (
    ResponseOutcome,
    check_response,
    contact_slots,
    record_response,
)
from bot.settings import Settings
from rota.models import Absence, Person, Shift, Team
from tests.bot.services.conftest import (
    SETTINGS,
    add_a_manager_in_a_team_of_their_own,
    count,
    respond,
)
from tests.handlers.slack_payloads import EDT_CHANNEL, NOW, Scenario, slack_user

LONDON = SETTINGS.timezone


@pytest.mark.parametrize(
    ("who", "status", "on_behalf_of"),
    [
        ("hv-kpatel", "recorded", None),  # the recipient
        ("hv-cover", "recorded", "hv-kpatel"),  # their deputy (the chain)
        ("hv-lead", "recorded", "hv-kpatel"),  # the team manager (the chain)
        ("hv-senior", "recorded", "hv-kpatel"),  # a manager of the team
        ("hv-jones", "refused", None),  # a colleague outside the chain
        ("gp-mgr", "refused", None),  # a manager of another team
        ("edt-mgr", "refused", None),  # on call, but not for this target
        ("U0STRANGER", "refused", None),  # not in the rota
    ],
)
def test_who_may_respond_to_a_person_target(
    session_factory: sessionmaker[Session],
    scenario: Scenario,
    who: str,
    status: str,
    on_behalf_of: str | None,
) -> None:
    outcome = respond(session_factory, scenario.prompt_id, who)
    assert outcome.status == status
    with session_factory() as session:
        if status == "recorded":
            assert outcome.on_behalf_of == on_behalf_of
            response = session.scalars(select(Response)).one()
            assert response.on_behalf_of == on_behalf_of
            assert count(session, Response) == 1
        else:
            assert count(session, Response) == 0
            refused = session.scalars(select(AuditEvent)).one()
            assert refused.event == "response_refused"
            assert refused.actor == who
            assert json.loads(refused.detail)["response"] == ResponseKind.ACKNOWLEDGED
            assert session.get(Target, scenario.target_id).state == "prompted"


@pytest.mark.parametrize(
    ("who", "status"),
    [("pc-jones", "recorded"), ("pol-sgt", "recorded"), ("hv-lead", "refused")],
)
def test_who_may_respond_to_a_role_target(
    session_factory: sessionmaker[Session], scenario: Scenario, who: str, status: str
) -> None:
    assert respond(session_factory, scenario.role_prompt_id, who).status == status


@pytest.mark.parametrize(("named", "status"), [(True, "recorded"), (False, "refused")])
def test_a_manager_named_by_the_holders_team_may_respond_to_a_role_target(
    session_factory: sessionmaker[Session], scenario: Scenario, named: bool, status: str
) -> None:
    """`manager` covers their own team and any team naming them as its manager
    (docs/reference/rota-files.md): a superintendent of another team, named manager of the unit
    whose officer holds the shift, may respond for that unit; without the naming, not."""
    with session_factory.begin() as session:
        add_a_manager_in_a_team_of_their_own(
            session, "pol-supt", "superintendent", "police-command", "police"
        )
        if named:
            session.get(Team, "police-dau").manager_id = "pol-supt"
    assert respond(session_factory, scenario.role_prompt_id, "pol-supt").status == status


def test_concurrent_responses_record_one(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    barrier = threading.Barrier(3)
    outcomes: list[ResponseOutcome] = []

    def one(person_id: str) -> None:
        barrier.wait()
        outcomes.append(
            respond(session_factory, scenario.prompt_id, person_id, ResponseKind.NOT_KNOWN)
        )

    people = ("hv-kpatel", "hv-lead", "hv-cover")
    threads = [threading.Thread(target=one, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(o.status for o in outcomes) == ["already", "already", "recorded"]
    winner = next(o for o in outcomes if o.status == "recorded")
    for late in (o for o in outcomes if o.status == "already"):
        assert late.earlier is not None
        assert late.earlier.responder_id == winner.responder_id
        assert late.earlier.kind == "not_known"
    with session_factory() as session:
        assert count(session, Response) == 1
        events = session.scalars(select(AuditEvent.event)).all()
        assert events == ["not_known"]


def test_responses_to_a_closed_referral_or_unknown_prompt(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    assert respond(session_factory, 999_999, "hv-kpatel").status == "not_found"
    assert respond(session_factory, None, "hv-kpatel").status == "not_found"
    with session_factory.begin() as session:
        closed = close_referral(
            session, scenario.referral_id, slack_user("edt-amy"), "done", now=NOW, settings=SETTINGS
        )
        assert closed.status == "closed"
    outcome = respond(session_factory, scenario.prompt_id, "hv-kpatel")
    assert outcome.status == "closed"
    with session_factory() as session:
        assert count(session, Response) == 0


def test_check_response_before_a_modal_changes_nothing(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory.begin() as session:
        allowed = check_response(
            session,
            scenario.prompt_id,
            slack_user("hv-kpatel"),
            ResponseKind.HAS_INFORMATION,
            now=NOW,
            settings=SETTINGS,
        )
    assert allowed.status == "allowed"
    assert allowed.contact_slots[0] == datetime(2026, 11, 16, 10, 0, tzinfo=UTC)
    assert allowed.referral is not None and allowed.referral.referral_id == scenario.referral_id
    with session_factory() as session:
        assert count(session, Response) == 0 and count(session, AuditEvent) == 0
        assert session.get(Target, scenario.target_id).state == "prompted"


def test_has_information_needs_a_time_and_a_method(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    outcome = respond(
        session_factory, scenario.prompt_id, "hv-kpatel", ResponseKind.HAS_INFORMATION
    )
    assert outcome.status == "invalid"
    assert set(outcome.field_errors) == {"contact_by", "method"}
    later = respond(
        session_factory,
        scenario.prompt_id,
        "hv-kpatel",
        ResponseKind.HAS_INFORMATION,
        contact_by="2026-12-25T10:00:00+00:00",
        method="phone",
    )
    assert later.field_errors == {"contact_by": "Choose a time within the next two weeks."}
    with session_factory() as session:
        assert count(session, Response) == 0
        assert session.get(Target, scenario.target_id).state == "prompted"


def test_redirect_to_someone_already_asked_is_refused(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    first = respond(
        session_factory,
        scenario.prompt_id,
        "hv-kpatel",
        ResponseKind.REDIRECTED,
        colleague="hv-jones",
    )
    assert first.status == "recorded" and first.redirected_to == "person:hv-jones"
    with session_factory() as session:
        new = session.scalars(select(Target).where(Target.spec == "person:hv-jones")).one()
        new_prompt = session.scalars(
            select(OutboxMessage).where(OutboxMessage.target_id == new.id)
        ).one()
    # hv-jones is now asked; the role target cannot be redirected to them as well.
    again = respond(
        session_factory,
        scenario.role_prompt_id,
        "pc-jones",
        ResponseKind.REDIRECTED,
        colleague="hv-jones",
    )
    assert again.field_errors == {
        "colleague": "Hv Jones is already being asked about this referral."
    }
    unknown = respond(
        session_factory,
        scenario.role_prompt_id,
        "pc-jones",
        ResponseKind.REDIRECTED,
        colleague="nobody",
    )
    assert unknown.field_errors == {"colleague": "Choose someone in the current rota."}
    # The redirected target's own prompt may be answered by its new recipient.
    with session_factory.begin() as session:
        new_prompt = session.get(OutboxMessage, new_prompt.id)
        new_prompt.state, new_prompt.recipient_id = "sent", "hv-jones"
        session.get(Target, new.id).state = "prompted"
    assert respond(session_factory, new_prompt.id, "hv-jones").status == "recorded"


FRIDAY_EVENING = datetime(2026, 11, 20, 17, 30, tzinfo=UTC)
TWO_ROLES = Settings(edt_channel=EDT_CHANNEL, alert_roles=("edt_manager", "police_dau"))


def on_call_friday_night(session: Session) -> None:
    """edt-mgr holds both alert roles on Friday night; pc-jones holds one."""
    start, end = FRIDAY_EVENING - timedelta(minutes=30), FRIDAY_EVENING + timedelta(hours=15)
    session.add_all(
        [
            Shift(person_id="edt-mgr", role="edt_manager", start_at=start, end_at=end),
            Shift(person_id="edt-mgr", role="police_dau", start_at=start, end_at=end),
            Shift(person_id="pc-jones", role="police_dau", start_at=start, end_at=end),
        ]
    )


def redirect_on_friday_evening(
    session_factory: sessionmaker[Session], scenario: Scenario, settings: Settings = TWO_ROLES
) -> int:
    """hv-kpatel redirects to hv-jones on Friday evening; the new target's id."""
    with session_factory.begin() as session:
        outcome = record_response(
            session,
            scenario.prompt_id,
            slack_user("hv-kpatel"),
            ResponseKind.REDIRECTED,
            now=FRIDAY_EVENING,
            settings=settings,
            colleague="hv-jones",
        )
    assert outcome.status == "recorded"
    with session_factory() as session:
        return session.scalars(select(Target.id).where(Target.spec == "person:hv-jones")).one()


def test_redirect_to_someone_away_raises_a_long_gap(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    new_id = redirect_on_friday_evening(session_factory, scenario, SETTINGS)
    with session_factory() as session:
        new = session.get_one(Target, new_id)
        assert new.state == "held"
        assert new.due_at == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Monday morning
        kinds = sorted(
            session.scalars(
                select(OutboxMessage.kind).where(OutboxMessage.target_id == new.id)
            ).all()
        )
        assert kinds == ["long_gap", "prompt"]
        gap = session.scalars(select(AuditEvent).where(AuditEvent.event == "long_gap_alert")).one()
        assert gap.target == "person:hv-jones"
        assert json.loads(gap.detail)["gap_minutes"] == 63 * 60 + 30


def alerts_and_events(session: Session, target_id: int, kind: str, event: str) -> tuple:
    rows = session.scalars(
        select(OutboxMessage).where(
            OutboxMessage.target_id == target_id, OutboxMessage.kind == kind
        )
    ).all()
    logged = session.scalars(
        select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)
    ).all()
    return (
        sorted(r.recipient_id for r in rows),
        [(e.recipient, e.target, e.actor, json.loads(e.detail)) for e in logged],
    )


def test_redirect_long_gap_alerts_each_on_call_holder_once_as_intake_does(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory.begin() as session:
        on_call_friday_night(session)
    target_id = redirect_on_friday_evening(session_factory, scenario)
    with session_factory() as session:
        recipients, logged = alerts_and_events(session, target_id, "long_gap", "long_gap_alert")
    assert recipients == ["edt-mgr", "pc-jones"]  # edt-mgr holds two alert roles: one alert
    gap = {"due_at": "2026-11-23T09:00:00+00:00", "gap_minutes": 3810, "gap": "63 h 30 min"}
    assert logged == [
        ("edt-mgr", "person:hv-jones", "hv-kpatel", gap),
        ("pc-jones", "person:hv-jones", "hv-kpatel", gap),
    ]


def test_redirect_to_someone_unroutable_alerts_each_on_call_holder_once(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory.begin() as session:
        on_call_friday_night(session)
        # hv-jones and their team manager are away for a fortnight; the team has no duty holder.
        for person_id in ("hv-jones", "hv-lead"):
            session.add(
                Absence(
                    person_id=person_id,
                    start_date=date(2026, 11, 20),
                    end_date=date(2026, 12, 4),
                    reason="leave",
                )
            )
    target_id = redirect_on_friday_evening(session_factory, scenario)
    with session_factory() as session:
        assert session.get(Target, target_id).state == "unroutable"
        recipients, logged = alerts_and_events(session, target_id, "unroutable", "unroutable")
    assert recipients == ["edt-mgr", "pc-jones"]
    reason = "nobody in the chain is at work within 7 days"
    assert logged == [
        (
            None,
            "person:hv-jones",
            "hv-kpatel",
            {"reason": reason, "redirected_from": "person:hv-kpatel"},
        )
    ]


@pytest.mark.parametrize(
    ("now", "first", "next_day"),
    [
        # Monday 09:12: today from 10:00, then Tuesday.
        (datetime(2026, 11, 16, 9, 12, tzinfo=UTC), "2026-11-16T10:00", "2026-11-17"),
        # Friday 16:50: nothing left today; the next working day is Monday.
        (datetime(2026, 11, 20, 16, 50, tzinfo=UTC), "2026-11-23T10:00", "2026-11-23"),
        # Christmas Eve: Christmas (Fri) and Boxing Day's substitute (Mon 28) are skipped.
        (datetime(2026, 12, 24, 16, 0, tzinfo=UTC), "2026-12-24T17:00", "2026-12-29"),
        # Summer time: slots are whole local hours (BST).
        (datetime(2026, 6, 15, 8, 40, tzinfo=UTC), "2026-06-15T10:00", "2026-06-16"),
    ],
)
def test_contact_slots(
    session_factory: sessionmaker[Session],
    scenario: Scenario,
    now: datetime,
    first: str,
    next_day: str,
) -> None:
    with session_factory() as session:
        person = session.get(Person, "hv-kpatel")
        slots = contact_slots(session, person, now, LONDON)
    local = [s.astimezone(LONDON) for s in slots]
    assert local[0].strftime("%Y-%m-%dT%H:%M") == first
    assert [s.strftime("%H:%M") for s in local[-4:]] == ["10:00", "12:00", "14:00", "16:00"]
    assert local[-1].date().isoformat() == next_day
    assert all(s > now for s in slots)


def test_acknowledged_then_answered_counts_for_coverage(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    """An acknowledgement only says the prompt was seen: the same target may still answer."""
    assert respond(session_factory, scenario.prompt_id, "hv-kpatel").status == "recorded"
    again = respond(session_factory, scenario.prompt_id, "hv-kpatel")
    assert again.status == "already"
    redirect = respond(
        session_factory,
        scenario.prompt_id,
        "hv-kpatel",
        ResponseKind.REDIRECTED,
        colleague="hv-jones",
    )
    assert redirect.status == "already"
    with session_factory() as session:
        before = coverage_for_referrals(session, [scenario.referral_id], LONDON)
    assert str(before[scenario.referral_id].states["health"]) == "pending"

    answered = respond(session_factory, scenario.prompt_id, "hv-kpatel", ResponseKind.NOT_KNOWN)
    assert answered.status == "recorded"
    assert (
        respond(
            session_factory, scenario.prompt_id, "hv-kpatel", ResponseKind.HAS_INFORMATION
        ).status
        == "already"
    )
    with session_factory() as session:
        kinds = session.scalars(select(Response.kind).order_by(Response.id)).all()
        events = session.scalars(
            select(AuditEvent.event).where(AuditEvent.event.in_(("acknowledged", "not_known")))
        ).all()
        assert session.get(Target, scenario.target_id).state == "not_known"
        after = coverage_for_referrals(session, [scenario.referral_id], LONDON)
    assert kinds == ["acknowledged", "not_known"]
    assert events == ["acknowledged", "not_known"]
    assert str(after[scenario.referral_id].states["health"]) == "covered"
