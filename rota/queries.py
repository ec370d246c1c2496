"""What routing reads of the rota, as plain values, and the statements that read it.

Each statement is built once per dialect and binds every list as one parameter (an array on
PostgreSQL, JSON on SQLite), so its SQL is the same whatever the number of people or roles
asked about: SQLAlchemy, sqlite3 and PostgreSQL's prepared statements reuse their work, and no
list needs splitting under a backend's parameter limit. Handover runs on these two databases.
"""

from __future__ import annotations

from datetime import date, datetime, time
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    ColumnElement,
    CompoundSelect,
    Date,
    Integer,
    Select,
    String,
    Time,
    any_,
    bindparam,
    cast,
    exists,
    func,
    literal_column,
    null,
    or_,
    select,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import TableValuedAlias

from rota.models import Absence, Closure, NamedRole, Person, RotaVersion, Shift, Team

# Start instants read ahead per role: the first held by an active person is almost always
# among them; when it is not, one more query finds it.
NEXT_STARTS = 3
_SPAN_COLUMNS = (Shift.person_id, Shift.role, Shift.start_at, Shift.end_at)


class ChainPerson(NamedTuple):
    """What routing reads of a person: plain values, cheaper to load than an ORM row."""

    person_id: str
    team_id: str
    hours: str | None
    deputy_id: str | None
    active: bool


class ChainTeam(NamedTuple):
    """What routing reads of a team."""

    team_id: str
    region: str
    hours: str | None
    manager_id: str | None
    channel: str | None
    active: bool


class ClosureRow(NamedTuple):
    """A closure as plain values (the columns closure_applies and closure_window read)."""

    applies_to: str
    date: date
    from_time: time | None
    to_time: time | None


class ShiftSpan(NamedTuple):
    """A shift as plain values: cheaper than an ORM row when thousands are read."""

    person_id: str
    role: str
    start_at: datetime
    end_at: datetime


def _list_values(name: str, dialect: str) -> TableValuedAlias:
    """The strings of the list bound as `name`, as a table with one column, `value`."""
    if dialect == "postgresql":
        values = func.unnest(bindparam(name, type_=ARRAY(String)))
        return values.table_valued("value").render_derived()
    return func.json_each(bindparam(name, type_=JSON)).table_valued("value")


def _in_list(column: ColumnElement[str], name: str, dialect: str) -> ColumnElement[bool]:
    """`column IN (the list bound as `name`)`, usable as an index condition."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(String)))
    return column.in_(select(_list_values(name, dialect).c.value))


_PERSON_COLUMNS = [getattr(Person, f) for f in ChainPerson._fields]
_TEAM_COLUMNS = [getattr(Team, f) for f in ChainTeam._fields]


@lru_cache(maxsize=4)
def targets_query(dialect: str) -> CompoundSelect:
    """People and everyone their chains name, teams, and which roles some shift has named.

    A 'person' row is one of the people, their deputy or their team's manager, with the
    person's team; a 'team' row is one of the teams; a 'role' row names a role of the list
    that some shift, past or future, names or once named (`named_roles`; an index probe each).
    """
    target, named_team = aliased(Person), aliased(Team)
    named = union(
        select(_list_values("people", dialect).c.value),
        select(target.deputy_id).where(_in_list(target.person_id, "people", dialect)),
        select(named_team.manager_id)
        .join(target, target.team_id == named_team.team_id)
        .where(_in_list(target.person_id, "people", dialect)),
        select(named_team.manager_id).where(_in_list(named_team.team_id, "teams", dialect)),
    )
    people = (
        select(literal_column("'person'"), *_PERSON_COLUMNS, *_TEAM_COLUMNS)
        .outerjoin(Team, Team.team_id == Person.team_id)
        .where(Person.person_id.in_(named))
    )
    no_person = [null()] * len(_PERSON_COLUMNS)
    teams = select(literal_column("'team'"), *no_person, *_TEAM_COLUMNS).where(
        _in_list(Team.team_id, "teams", dialect)
    )
    roles = _list_values("roles", dialect)
    # The role's name stands where a person's id would.
    named_roles = select(
        literal_column("'role'"), roles.c.value, *no_person[1:], *[null()] * len(_TEAM_COLUMNS)
    ).where(
        or_(
            exists().where(Shift.role == roles.c.value),
            exists().where(NamedRole.role == roles.c.value),
        )
    )
    return union_all(people, teams, named_roles)


def _held_by_active(person_id: ColumnElement[str]) -> ColumnElement[bool]:
    # A subquery per row found, not a join: with a join PostgreSQL misjudges how few shifts
    # cover an instant and hashes the whole people table.
    return select(Person.active).where(Person.person_id == person_id).scalar_subquery()


def _spans(kind: str) -> Select[Any]:
    """Shift spans tagged with the part of a union they come from, and the holder's activity."""
    return select(literal_column(f"'{kind}'"), *_SPAN_COLUMNS, _held_by_active(Shift.person_id))


# The columns a shift row leaves empty, typed so that SQLite's dates and times are read as
# such; and those a calendar row leaves empty.
_NO_CALENDAR = (
    cast(null(), Date),
    cast(null(), Date),
    cast(null(), Time),
    cast(null(), Time),
    cast(null(), Integer),
)
_NO_SHIFT = (null(),) * 4  # role, start_at, end_at, active


def _calendar_arms(dialect: str) -> tuple[Select[Any], ...]:
    """The absence, closure and version rows of window_query."""
    first, last = bindparam("first", type_=Date), bindparam("last", type_=Date)
    absences = select(
        literal_column("'absence'"),
        Absence.person_id,
        *_NO_SHIFT,
        Absence.start_date,
        Absence.end_date,
        null(),
        null(),
        null(),
    ).where(
        _in_list(Absence.person_id, "people", dialect),
        Absence.start_date <= last,
        Absence.end_date >= first,
    )
    closures = select(
        literal_column("'closure'"),
        Closure.applies_to,
        *_NO_SHIFT,
        Closure.date,
        Closure.date,
        Closure.from_time,
        Closure.to_time,
        null(),
    ).where(
        Closure.date >= first,
        Closure.date <= last,
        _in_list(Closure.applies_to, "applies_to", dialect),
    )
    version = select(
        literal_column("'version'"),
        null(),
        *_NO_SHIFT,
        *[null()] * 4,
        func.max(RotaVersion.version),
    )
    return absences, closures, version


@lru_cache(maxsize=4)
def window_query(dialect: str) -> CompoundSelect:
    """What routing reads of a window once it knows the people, roles and teams concerned.

    Every row is (kind, ref, role, start_at, end_at, active, first, last, from_time, to_time,
    version), filled as its kind needs: a 'person' row is a shift of one of the people; a
    'cover' row a shift of one of the roles covering `start`; a 'next' row a shift at one of
    the role's first NEXT_STARTS start instants after `start` (each with whether its holder
    is active); an 'absence' row an absence of one of the people, and a 'closure' row a
    closure applying to `applies_to`, meeting the local dates [first, last]; the 'version'
    row the rota version.
    """
    lookback, start, until = bindparam("lookback"), bindparam("start"), bindparam("until")
    for_people = _spans("person").where(
        _in_list(Shift.person_id, "people", dialect),
        Shift.start_at >= lookback,
        Shift.start_at < bindparam("after_until"),
        Shift.end_at > start,
    )
    covering = _spans("cover").where(
        _in_list(Shift.role, "roles", dialect),
        Shift.start_at >= lookback,
        Shift.start_at <= start,
        Shift.end_at > start,
    )
    # The shifts at each role's first NEXT_STARTS start instants after `start`: for each
    # role, a few steps along ix_shifts_role_start, never the role's whole week.
    roles, later = _list_values("roles", dialect), aliased(Shift)
    first_starts = (
        select(later.start_at)
        .where(
            later.role == roles.c.value,
            later.start_at > start,
            later.start_at <= until,
            later.end_at > later.start_at,
        )
        .distinct()
        .order_by(later.start_at)
        .limit(NEXT_STARTS)
    )
    if dialect == "postgresql":
        # PostgreSQL runs an IN (subquery) once per shift of the role; an array, once.
        at_first_starts = Shift.start_at == any_(func.array(first_starts.scalar_subquery()))
    else:
        at_first_starts = Shift.start_at.in_(first_starts)
    following = (
        _spans("next")
        .select_from(roles)
        .join(Shift, Shift.role == roles.c.value)
        .where(at_first_starts, Shift.end_at > Shift.start_at)
    )
    return union_all(
        *(arm.add_columns(*_NO_CALENDAR) for arm in (for_people, covering, following)),
        *_calendar_arms(dialect),
    )


@lru_cache(maxsize=1)
def first_active_start_query() -> Select[Any]:
    """The shifts of a role at its first start in (start, until] with an active holder."""
    # ORDER BY ... LIMIT 1 walks ix_shifts_role_start from `start` and stops at the first
    # active holder; min() over a join would read every shift of the role in the window.
    role, start, until = bindparam("role"), bindparam("start"), bindparam("until")
    first = (
        select(Shift.start_at)
        .join(Person, Person.person_id == Shift.person_id)
        .where(
            Shift.role == role,
            Shift.start_at > start,
            Shift.start_at <= until,
            Shift.end_at > Shift.start_at,
            Person.active.is_(True),
        )
        .order_by(Shift.start_at)
        .limit(1)
        .scalar_subquery()
    )
    return _spans("next").where(
        Shift.role == role, Shift.start_at == first, Shift.end_at > Shift.start_at
    )
