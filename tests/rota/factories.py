"""Helpers that insert rota rows directly, independent of the CSV importer."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from rota.models import Absence, Closure, Person, RotaVersion, Shift, Team

LONDON = ZoneInfo("Europe/London")


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware Europe/London instant (fold=0)."""
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def new_team(team_id: str, **fields: object) -> Team:
    """A team row, not yet added: a health team in England with no hours, manager or channel."""
    defaults: dict[str, object] = {
        "name": team_id.replace("-", " ").title(),
        "agency": "Test agency",
        "agency_type": "health",
        "region": "england",
        "hours": None,
        "manager_id": None,
        "channel": None,
    }
    return Team(team_id=team_id, **(defaults | fields))


def new_person(person_id: str, team_id: str, **fields: object) -> Person:
    """A person row, not yet added, with a name, Slack ID and email made from the id."""
    defaults: dict[str, object] = {
        "name": person_id.replace("-", " ").title(),
        "slack_user": f"U{person_id.upper().replace('-', '')}"[:32],
        "email": f"{person_id}@example.org",
        "role": "professional",
        "hours": None,
        "deputy_id": None,
        "permissions": "",
    }
    return Person(person_id=person_id, team_id=team_id, **(defaults | fields))


def add_team(
    session: Session,
    team_id: str,
    *,
    region: str = "england",
    hours: str | None = None,
    manager: str | None = None,
    channel: str | None = None,
    agency_type: str = "health",
    active: bool = True,
) -> Team:
    team = new_team(
        team_id,
        agency_type=agency_type,
        region=region,
        hours=hours,
        manager_id=manager,
        channel=channel,
        active=active,
    )
    session.add(team)
    session.flush()
    return team


def add_person(
    session: Session,
    person_id: str,
    team_id: str,
    *,
    hours: str | None = None,
    deputy: str | None = None,
    active: bool = True,
    permissions: str = "",
    role: str = "professional",
) -> Person:
    person = new_person(
        person_id,
        team_id,
        role=role,
        hours=hours,
        deputy_id=deputy,
        permissions=permissions,
        active=active,
    )
    session.add(person)
    session.flush()
    return person


def add_shift(session: Session, person_id: str, role: str, start: datetime, end: datetime) -> Shift:
    shift = Shift(person_id=person_id, role=role, start_at=start, end_at=end)
    session.add(shift)
    session.flush()
    return shift


def add_absence(session: Session, person_id: str, start: date, end: date) -> Absence:
    absence = Absence(person_id=person_id, start_date=start, end_date=end, reason="leave")
    session.add(absence)
    session.flush()
    return absence


def add_closure(
    session: Session,
    day: date,
    applies_to: str = "all",
    from_time: time | None = None,
    to_time: time | None = None,
) -> Closure:
    closure = Closure(
        date=day, applies_to=applies_to, from_time=from_time, to_time=to_time, reason="closed"
    )
    session.add(closure)
    session.flush()
    return closure


def add_version(session: Session, version: int) -> RotaVersion:
    row = RotaVersion(
        version=version, imported_at=datetime(2026, 1, 1, tzinfo=UTC), files="", summary="{}"
    )
    session.add(row)
    session.flush()
    return row
