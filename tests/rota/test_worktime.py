"""The one rule deciding which working time a prompt is measured in, at exact instants."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

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


def test_a_person_is_measured_in_their_teams_hours(rota: Session) -> None:
    working = working_time_for(RotaStore(rota), "mw-ann", "person:mw-ann", LONDON)
    assert iso(working.end_of_working_day(MONDAY_10)) == "2027-01-11T17:00:00+00:00"


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
