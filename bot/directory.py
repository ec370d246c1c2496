"""Looking people, teams and roles up for Slack: who a Slack user is, and search-as-you-type."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from rota.models import Person, Shift, Team

SEARCH_LIMIT = 50


def person_for_slack_user(session: Session, slack_user_id: str) -> Person | None:
    """The active person whose Slack user (given or looked up by email) is `slack_user_id`."""
    return session.scalars(
        select(Person)
        .where(Person.active.is_(True))
        .where(or_(Person.slack_user == slack_user_id, Person.slack_user_found == slack_user_id))
        .limit(1)
    ).first()


def _pattern(query: str) -> str:
    escaped = query.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_people(session: Session, query: str, limit: int = SEARCH_LIMIT) -> list[tuple[str, str]]:
    """Active people whose id or name contains `query`, as (person_id, label)."""
    pattern = _pattern(query)
    rows = session.execute(
        select(Person.person_id, Person.name, Person.role, Team.name)
        .join(Team, Team.team_id == Person.team_id)
        .where(Person.active.is_(True))
        .where(
            or_(
                Person.person_id.ilike(pattern, escape="\\"),
                Person.name.ilike(pattern, escape="\\"),
            )
        )
        .order_by(Person.name)
        .limit(limit)
    ).all()
    return [(pid, f"{name} — {role}, {team}") for pid, name, role, team in rows]


def search_teams(session: Session, query: str, limit: int = SEARCH_LIMIT) -> list[tuple[str, str]]:
    """Active teams whose id or name contains `query`, as (team_id, label)."""
    pattern = _pattern(query)
    rows = session.execute(
        select(Team.team_id, Team.name, Team.agency)
        .where(Team.active.is_(True))
        .where(
            or_(
                Team.team_id.ilike(pattern, escape="\\"),
                Team.name.ilike(pattern, escape="\\"),
            )
        )
        .order_by(Team.name)
        .limit(limit)
    ).all()
    return [(tid, f"{name} ({agency})") for tid, name, agency in rows]


def search_roles(session: Session, query: str, limit: int = SEARCH_LIMIT) -> list[tuple[str, str]]:
    """Shift roles named in the rota that contain `query`, as (role, label)."""
    pattern = _pattern(query)
    rows = session.scalars(
        select(Shift.role)
        .where(Shift.role.ilike(pattern, escape="\\"))
        .distinct()
        .order_by(Shift.role)
        .limit(limit)
    ).all()
    return [(role, role) for role in rows]
