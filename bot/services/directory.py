"""Looking people, teams and roles up for Slack: who a Slack user is, and search-as-you-type."""

from __future__ import annotations

from sqlalchemy import or_, select, union
from sqlalchemy.orm import Session

from rota.models import NamedRole, Person, Shift, Team

SEARCH_LIMIT = 50
# Longer queries match nothing useful, and a long LIKE pattern is refused by SQLite.
MAX_QUERY_CHARS = 100


def person_for_slack_user(
    session: Session, slack_user_id: str, workspace: str | None = None
) -> Person | None:
    """The active person whose Slack identity is (`workspace`, `slack_user_id`): their Slack
    user (given or looked up by email) in their team's workspace (None: the home one). A user
    of one workspace never matches a person of another (docs/partner-workspaces.md)."""
    in_workspace = Team.workspace.is_(None) if workspace is None else Team.workspace == workspace
    return session.scalars(
        select(Person)
        .join(Team, Team.team_id == Person.team_id)
        .where(Person.active.is_(True), in_workspace)
        .where(or_(Person.slack_user == slack_user_id, Person.slack_user_found == slack_user_id))
        .limit(1)
    ).first()


def workspace_of_person(session: Session, person_id: str | None) -> str | None:
    """The Slack workspace of a person's team (None: the home one, or no such person)."""
    if person_id is None:
        return None
    return session.scalar(
        select(Team.workspace)
        .join(Person, Person.team_id == Team.team_id)
        .where(Person.person_id == person_id)
    )


def search_text(query: object) -> str:
    """What to search for: text only, without lone surrogates or NULs, at most MAX_QUERY_CHARS."""
    if not isinstance(query, str):
        return ""
    # Neither database takes a lone UTF-16 surrogate; PostgreSQL takes no NUL.
    text = "".join(char for char in query if char != "\x00" and not "\ud800" <= char <= "\udfff")
    return text.strip()[:MAX_QUERY_CHARS]


def _pattern(query: object) -> str:
    text = search_text(query).lower()
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
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
    """Roles some shift names, or once named, that contain `query`, as (role, label)."""
    pattern = _pattern(query)
    roles = union(
        select(Shift.role).where(Shift.role.ilike(pattern, escape="\\")),
        select(NamedRole.role).where(NamedRole.role.ilike(pattern, escape="\\")),
    ).subquery()
    rows = session.scalars(select(roles.c.role).order_by(roles.c.role).limit(limit)).all()
    return [(role, role) for role in rows]
