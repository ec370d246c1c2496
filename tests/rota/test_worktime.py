"""The one rule deciding which working time a prompt is measured in, at exact instants."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from bot.settings import URGENT_POLICY, EscalationPolicy
from rota.escalation import escalation_schedule
from rota.store import RotaStore
from rota.worktime import WorkingTimes, working_time_for
from tests.rota.factories import LONDON, add_person, add_shift, add_team, local


def iso(t: datetime) -> str:
    return t.astimezone(LONDON).isoformat()


@pytest.fixture
def rota(session: Session) -> Session:
    """A midwife on 08:00-16:00 in a 09:00-17:00 team, a shift-only police team."""
    add_team(session, "mw-south", hours="Mon-Fri 09:00-17:00", channel="CMWSOUTH")
    add_person(session, "mw-ann", "mw-south", hours="Mon-Fri 08:00-16:00")
    add_team(session, "mw-early", hours="none")
    add_person(session, "mw-early-1", "mw-early", hours="Mon-Fri 08:00-16:00")
    add_team(session, "police-dau", hours="none", agency_type="police")
    add_person(session, "pc-pat", "police-dau")
    session.commit()
    return session


MONDAY_10 = local(2027, 1, 11, 10)


def test_a_person_breaches_at_the_end_of_their_own_day_and_escalates_in_team_time(
    rota: Session,
) -> None:
    working = working_time_for(RotaStore(rota), "mw-ann", "person:mw-ann", LONDON)
    # The midwife's own day (08:00-16:00) ends her respond-by and her breach...
    assert iso(working.end_of_working_day(MONDAY_10)) == "2027-01-11T16:00:00+00:00"
    # ... after 16:00 it is her next working day's end ...
    assert iso(working.end_of_working_day(local(2027, 1, 11, 16, 30))) == (
        "2027-01-12T16:00:00+00:00"
    )
    # ... and the offsets count her team's working time (09:00-17:00).
    assert iso(working.add_working_minutes(local(2027, 1, 11, 15, 30), 60)) == (
        "2027-01-11T16:30:00+00:00"
    )


def test_own_hours_steps_and_breach_standard_and_urgent(rota: Session) -> None:
    working = working_time_for(RotaStore(rota), "mw-ann", "person:mw-ann", LONDON)
    standard = escalation_schedule(local(2027, 1, 11, 14), working, EscalationPolicy())
    assert [(step, iso(at)) for step, at in standard] == [
        ("remind", "2027-01-11T15:00:00+00:00"),
        ("escalate", "2027-01-11T16:00:00+00:00"),
        ("escalate_channel", "2027-01-12T10:00:00+00:00"),  # 3 h on Monday, 1 h on Tuesday
        ("breach", "2027-01-12T16:00:00+00:00"),  # the end of her own Tuesday
    ]
    urgent = escalation_schedule(local(2027, 1, 11, 14), working, URGENT_POLICY)
    assert [(step, iso(at)) for step, at in urgent] == [
        ("remind", "2027-01-11T14:15:00+00:00"),
        ("escalate", "2027-01-11T14:30:00+00:00"),
        ("escalate_channel", "2027-01-11T15:00:00+00:00"),
        ("breach", "2027-01-11T16:00:00+00:00"),  # her day ends at 16:00, not the team's 17:00
    ]


def test_own_hours_across_the_clocks_going_back(rota: Session) -> None:
    # Summer time ends on Sunday 31 October 2027: Friday is BST, Monday GMT.
    working = working_time_for(RotaStore(rota), "mw-ann", "person:mw-ann", LONDON)
    sent = local(2027, 10, 29, 15)
    assert iso(working.end_of_working_day(sent)) == "2027-10-29T16:00:00+01:00"
    standard = escalation_schedule(sent, working, EscalationPolicy())
    assert [(step, iso(at)) for step, at in standard] == [
        ("remind", "2027-10-29T16:00:00+01:00"),
        ("escalate", "2027-10-29T17:00:00+01:00"),
        ("escalate_channel", "2027-11-01T11:00:00+00:00"),  # 2 h on Friday, 2 h from 09:00 GMT
        ("breach", "2027-11-01T16:00:00+00:00"),  # her 16:00, in winter time
    ]
    urgent = escalation_schedule(local(2027, 10, 29, 16, 50), working, URGENT_POLICY)
    assert [(step, iso(at)) for step, at in urgent] == [
        ("remind", "2027-11-01T09:05:00+00:00"),  # 10 min on Friday (BST), 5 on Monday (GMT)
        ("escalate", "2027-11-01T09:20:00+00:00"),
        ("escalate_channel", "2027-11-01T09:50:00+00:00"),
        ("breach", "2027-11-01T16:00:00+00:00"),
    ]


def test_a_team_without_hours_measures_its_day_workers_by_their_own(rota: Session) -> None:
    working = working_time_for(RotaStore(rota), "mw-early-1", "team:mw-early", LONDON)
    # The midwife breaches at 16:00, the end of her own day, not 17:00.
    assert iso(working.end_of_working_day(MONDAY_10)) == "2027-01-11T16:00:00+00:00"


def test_a_team_channel_is_measured_in_the_teams_hours(rota: Session) -> None:
    working = working_time_for(RotaStore(rota), "CMWSOUTH", "team:mw-south", LONDON)
    assert iso(working.add_working_minutes(local(2027, 1, 8, 16, 30), 60)) == (
        "2027-01-11T09:30:00+00:00"
    )


def test_someone_no_longer_in_the_rota_is_measured_in_the_targets_team(rota: Session) -> None:
    working = working_time_for(RotaStore(rota), "gone-1", "person:mw-ann", LONDON)
    assert iso(working.end_of_working_day(MONDAY_10)) == "2027-01-11T17:00:00+00:00"


@pytest.mark.parametrize(
    ("recipient", "target"),
    [("CDAU", "team:police-dau"), (None, "role:police_dau"), ("CX", "team:unknown")],
)
def test_without_a_person_or_team_hours_it_is_wall_clock(
    rota: Session, recipient: str | None, target: str
) -> None:
    working = working_time_for(RotaStore(rota), recipient, target, LONDON)
    assert working.wall_clock
    assert working.add_working_minutes(MONDAY_10, 90) == MONDAY_10 + timedelta(minutes=90)
    assert working.end_of_working_day(MONDAY_10) == MONDAY_10 + timedelta(hours=24)


def test_a_shift_only_recipient_breaches_at_the_end_of_their_shift(rota: Session) -> None:
    add_shift(rota, "pc-pat", "police_dau", local(2027, 1, 9, 20), local(2027, 1, 10, 8))
    working = working_time_for(RotaStore(rota), "pc-pat", "role:police_dau", LONDON)
    assert iso(working.end_of_working_day(local(2027, 1, 10, 2))) == "2027-01-10T08:00:00+00:00"


def test_working_times_are_remembered_per_person_and_per_team(rota: Session) -> None:
    times = WorkingTimes(RotaStore(rota), LONDON)
    assert times.of_prompt("mw-ann", "person:mw-ann") is times.of_prompt("mw-ann", "team:x")
    assert times.of_prompt("C1", "team:mw-south") is times.of_prompt("C2", "team:mw-south")
