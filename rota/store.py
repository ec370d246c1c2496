"""Read-only, indexed queries on the rota; one store per request, caching what it reads.

Services read whole rows (ORM objects: `person`, `team`, ...); routing reads what it needs as
plain values, several kinds in one statement (`load_targets`, then `read_window`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Executable,
    Row,
    Select,
    func,
    select,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from rota.calendar import (
    ClosureWindow,
    bank_holiday_name,
    is_working_day,
    local_instant,
    working_periods,
)
from rota.hours import WeeklyHours, parse_hours
from rota.models import MAX_SHIFT_HOURS, Absence, Closure, Person, RotaVersion, Shift, Team
from rota.queries import (
    NEXT_STARTS,
    ChainPerson,
    ChainTeam,
    ClosureRow,
    ShiftSpan,
    first_active_start_query,
    targets_query,
    window_query,
)

_Row = TypeVar("_Row", Person, Team)

_MAX_SHIFT = timedelta(hours=MAX_SHIFT_HOURS)
_SECOND = timedelta(seconds=1)
_CHUNK = 500  # ids per IN list, well under every backend's parameter limit
_SPAN_COLUMNS = (Shift.person_id, Shift.role, Shift.start_at, Shift.end_at)


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _overlapping(
    query: Select[Any], held_by: ColumnElement[bool], start: datetime, end: datetime
) -> Select[Any]:
    """`query` narrowed to the shifts `held_by` picks out that overlap [start, end), by start."""
    # The lower bound on start_at keeps the scan on ix_shifts_person_start.
    return query.where(
        held_by,
        Shift.start_at >= start - _MAX_SHIFT,
        Shift.start_at < end,
        Shift.end_at > start,
    ).order_by(Shift.start_at, Shift.person_id, Shift.id)


def effective_hours_text(person: Person | ChainPerson, team: Team | ChainTeam | None) -> str | None:
    """The person's own hours text, else their team's (None means the default)."""
    if person.hours and person.hours.strip():
        return person.hours
    return team.hours if team is not None else None


def effective_hours(person: Person | ChainPerson, team: Team | ChainTeam | None) -> WeeklyHours:
    """The person's weekly hours: their own, else the team's, else Mon-Fri 09:00-17:00."""
    return parse_hours(effective_hours_text(person, team))


def closure_applies(closure: Closure | ClosureRow, team: Team | ChainTeam) -> bool:
    """Whether a closure applies to the members of `team` (all, its region, or the team)."""
    return closure.applies_to in ("all", team.region, team.team_id)


def closure_window(closure: Closure | ClosureRow) -> ClosureWindow:
    """The calendar's plain value for a closure row."""
    return ClosureWindow(closure.date, closure.from_time, closure.to_time)


class Window(NamedTuple):
    """What routing reads of a window of time (RotaStore.read_window)."""

    shifts: dict[str, list[ShiftSpan]]  # per person, by start
    roles: dict[str, RoleShifts]
    absences: dict[str, list[tuple[date, date]]]  # per person, inclusive local dates
    closures: list[ClosureRow]
    rota_version: int


@dataclass(frozen=True)
class RoleShifts:
    """Who holds a role at `start`, and who starts holding it first after `start`.

    Enough to answer, for any instant t from `start` to `next_start` (or to the end of the
    window when nobody starts), who holds the role at t: nobody's holding can begin between
    `start` and `next_start`. Only shifts of active people count.
    """

    start: datetime
    until: datetime  # the end (inclusive) of the window searched for next_start
    at_start: tuple[ShiftSpan, ...] = ()  # shifts covering start, by (start_at, person_id)
    next_start: datetime | None = None  # the first start in (start, until]
    at_next: tuple[ShiftSpan, ...] = ()  # the shifts starting then, by person_id

    def holder(self, t: datetime, excluding: Collection[str] = ()) -> str | None:
        """The first holder at t (earliest shift start, then person_id) but those `excluding`
        names, or None."""
        if not self.start <= t <= (self.next_start or self.until):
            raise ValueError(f"{t} is outside what was read of the role")
        for span in self.at_start:
            if t < span.end_at and span.person_id not in excluding:
                return span.person_id
        if t != self.next_start:
            return None
        return next((s.person_id for s in self.at_next if s.person_id not in excluding), None)

    def next_held(self, until: datetime) -> datetime | None:
        """The earliest instant in [start, until] at which someone holds the role, or None."""
        if self.at_start:
            return self.start
        if self.next_start is not None and self.next_start <= until:
            return self.next_start
        return None


def _span_order(span: ShiftSpan) -> tuple[datetime, str]:
    return span.start_at, span.person_id


@dataclass(frozen=True)
class AtWork:
    """One line of `rota who`: a person at work and why."""

    person: Person
    team: Team | None
    why: str  # "shift ROLE" or "hours TEXT"


@dataclass(frozen=True)
class Away:
    """One line of `rota who`'s absent people: within their hours, yet not at work, and why."""

    person: Person
    team: Team
    why: str  # "absent: REASON (FIRST to LAST)", "bank holiday: NAME" or "closed: REASON"


class RotaStore:
    """The rota as the planner sees it: read-only queries, each bounded by an index."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._people: dict[str, Person | None] = {}
        self._teams: dict[str, Team | None] = {}
        self._roles: dict[str, bool] = {}
        self._version: int | None = None
        self._chain_people: dict[str, ChainPerson | None] = {}
        self._chain_teams: dict[str, ChainTeam | None] = {}
        self._dialect_name: str | None = None
        self._closures: dict[tuple[date, date], list[Closure]] = {}

    # People and teams -------------------------------------------------------------------

    def person(self, person_id: str) -> Person | None:
        """The person with this id (active or not), or None."""
        if person_id not in self._people:
            self._people[person_id] = self.session.get(Person, person_id)
        return self._people[person_id]

    def team(self, team_id: str) -> Team | None:
        """The team with this id, or None."""
        if team_id not in self._teams:
            self._teams[team_id] = self.session.get(Team, team_id)
        return self._teams[team_id]

    def people_by_ids(self, ids: Iterable[str]) -> dict[str, Person]:
        """The people with these ids that exist, in one query for those not yet cached."""
        return self._rows_by_ids(self._people, Person.person_id, ids)

    def teams_by_ids(self, ids: Iterable[str]) -> dict[str, Team]:
        """The teams with these ids that exist, in one query for those not yet cached."""
        return self._rows_by_ids(self._teams, Team.team_id, ids)

    def _rows_by_ids(
        self,
        cache: dict[str, _Row | None],
        key: InstrumentedAttribute[str],
        ids: Iterable[str],
    ) -> dict[str, _Row]:
        wanted = list(dict.fromkeys(ids))
        missing = [i for i in wanted if i not in cache]
        for chunk in _chunks(missing):
            found = {
                getattr(row, key.key): row
                for row in self.session.scalars(select(key.class_).where(key.in_(chunk)))
            }
            for row_id in chunk:
                cache[row_id] = found.get(row_id)
        return {i: row for i in wanted if (row := cache[i]) is not None}

    # What routing reads, as plain values (rota.queries) ------------------------------

    def load_targets(
        self,
        person_ids: Iterable[str] = (),
        team_ids: Iterable[str] = (),
        roles: Iterable[str] = (),
    ) -> None:
        """Read these people and teams, with everyone their chains name, and these roles.

        One query: a person comes with their team, their deputy and their team's manager; a
        team with its manager; each of them with their own team; a role with whether any
        shift names it.
        """
        people = [i for i in dict.fromkeys(person_ids) if i not in self._chain_people]
        teams = [i for i in dict.fromkeys(team_ids) if i not in self._chain_teams]
        wanted = [role for role in dict.fromkeys(roles) if role not in self._roles]
        if not (people or teams or wanted):
            return
        params = {"people": people, "teams": teams, "roles": wanted}
        width = len(ChainPerson._fields)
        for kind, *values in self._rows(targets_query(self._dialect()), params):
            if kind == "role":
                self._roles[values[0]] = True
                continue
            team = ChainTeam(*values[width:]) if values[width] is not None else None
            if kind == "person":
                person = ChainPerson(*values[:width])
                self._chain_people[person.person_id] = person
                self._chain_teams[person.team_id] = team
            elif team is not None:
                self._chain_teams[team.team_id] = team
        # Whoever the query looked for and did not find does not exist.
        looked_for: list[str | None] = [*people]
        for person in filter(None, (self._chain_people.get(i) for i in people)):
            team = self._chain_teams.get(person.team_id)
            looked_for += [person.deputy_id, team.manager_id if team else None]
        for team_id in teams:
            self._chain_teams.setdefault(team_id, None)
            team = self._chain_teams[team_id]
            looked_for.append(team.manager_id if team else None)
        for person_id in filter(None, looked_for):
            self._chain_people.setdefault(person_id, None)
        for role in wanted:
            self._roles.setdefault(role, False)

    def chain_person(self, person_id: str) -> ChainPerson | None:
        """The person with this id (active or not) as routing reads them, or None."""
        if person_id not in self._chain_people:
            self.load_targets([person_id])
        return self._chain_people[person_id]

    def chain_team(self, team_id: str) -> ChainTeam | None:
        """The team with this id as routing reads it, or None."""
        if team_id not in self._chain_teams:
            self.load_targets(team_ids=[team_id])
        return self._chain_teams[team_id]

    def shift_spans_for_people(
        self, person_ids: Iterable[str], start: datetime, end: datetime
    ) -> dict[str, list[ShiftSpan]]:
        """Each person's shifts overlapping [start, end), as plain values, by start."""
        result: dict[str, list[ShiftSpan]] = {}
        for chunk in _chunks(list(dict.fromkeys(person_ids))):
            query = _overlapping(select(*_SPAN_COLUMNS), Shift.person_id.in_(chunk), start, end)
            for row in self.session.execute(query):
                result.setdefault(row.person_id, []).append(ShiftSpan(*row))
        return result

    def active_shift_spans_for_roles(
        self, roles: Iterable[str], start: datetime, end: datetime
    ) -> dict[str, list[ShiftSpan]]:
        """Shifts of each role overlapping [start, end) held by active people, by start
        (`rota check` and `rota ical`)."""
        wanted = list(dict.fromkeys(roles))
        if not wanted:
            return {}
        held = select(*_SPAN_COLUMNS).join(Person, Person.person_id == Shift.person_id)
        query = _overlapping(held, Shift.role.in_(wanted), start, end).where(
            Person.active.is_(True)
        )
        result: dict[str, list[ShiftSpan]] = {}
        for row in self.session.execute(query):
            result.setdefault(row.role, []).append(ShiftSpan(*row))
        return result

    def role_known(self, role: str) -> bool:
        """Whether any shift in the rota, past or future, names this role."""
        return role in self.known_roles([role])

    def known_roles(self, roles: Iterable[str]) -> set[str]:
        """The roles that some shift in the rota, past or future, names; one query for all."""
        wanted = list(dict.fromkeys(roles))
        self.load_targets(roles=wanted)
        return {role for role in wanted if self._roles[role]}

    def read_window(
        self,
        person_ids: Iterable[str],
        roles: Iterable[str],
        applies_to: Iterable[str],
        start: datetime,
        until: datetime,
        days: tuple[date, date],
    ) -> Window:
        """What routing reads of [start, until], in one statement, usually.

        The people's shifts meeting it; who holds each role at `start`, and the shifts of its
        first few start instants after (never every shift of a busy role); the people's
        absences and the closures applying to `applies_to` (all, regions, team ids) on the
        local dates `days` (first, last); the rota version.
        """
        wanted = list(dict.fromkeys(roles))
        params = {
            "people": list(dict.fromkeys(person_ids)),
            "roles": wanted,
            "applies_to": list(dict.fromkeys(applies_to)),
            "lookback": start - _MAX_SHIFT,
            "start": start,
            "until": until,
            # Shifts ending exactly at `until` must still count as at work at `until`.
            "after_until": until + _SECOND,
            "first": days[0],
            "last": days[1],
        }
        by_person: dict[str, list[ShiftSpan]] = {}
        covers: dict[str, list[ShiftSpan]] = {role: [] for role in wanted}
        nexts: dict[str, list[tuple[ShiftSpan, bool]]] = {role: [] for role in wanted}
        absences: dict[str, list[tuple[date, date]]] = {}
        closures: list[ClosureRow] = []
        for (
            kind,
            ref,
            role,
            start_at,
            end_at,
            active,
            first,
            last,
            from_time,
            to_time,
            version,
        ) in self._rows(window_query(self._dialect()), params):
            if kind == "person":
                by_person.setdefault(ref, []).append(ShiftSpan(ref, role, start_at, end_at))
            elif kind == "cover":
                if active:
                    covers[role].append(ShiftSpan(ref, role, start_at, end_at))
            elif kind == "next":
                nexts[role].append((ShiftSpan(ref, role, start_at, end_at), bool(active)))
            elif kind == "absence":
                absences.setdefault(ref, []).append((first, last))
            elif kind == "closure":
                closures.append(ClosureRow(ref, first, from_time, to_time))
            else:
                self._version = version or 0
        for spans in by_person.values():
            spans.sort(key=_span_order)
        held = {
            role: RoleShifts(
                start,
                until,
                tuple(sorted(covers[role], key=_span_order)),
                *self._first_held(role, nexts[role], start, until),
            )
            for role in wanted
        }
        return Window(by_person, held, absences, closures, self.current_rota_version())

    def _first_held(
        self,
        role: str,
        found: list[tuple[ShiftSpan, bool]],
        start: datetime,
        until: datetime,
    ) -> tuple[datetime | None, tuple[ShiftSpan, ...]]:
        """The first start held by an active person, and its shifts, from the first starts."""
        held = sorted((span for span, active in found if active), key=_span_order)
        if held:
            first = held[0].start_at
            return first, tuple(span for span in held if span.start_at == first)
        if len({span.start_at for span, _ in found}) < NEXT_STARTS:
            return None, ()
        # Every one of the first few starts is held by someone inactive: look further.
        params = {"role": role, "start": start, "until": until}
        rows = self._rows(first_active_start_query(), params)
        spans = sorted(
            (ShiftSpan(*values) for _, *values, active in rows if active), key=_span_order
        )
        return (spans[0].start_at if spans else None), tuple(spans)

    # Shifts -------------------------------------------------------------------------------

    def shifts_for_person(self, person_id: str, start: datetime, end: datetime) -> list[Shift]:
        """The person's shifts overlapping [start, end), by start."""
        return self.shifts_for_people([person_id], start, end).get(person_id, [])

    def shifts_for_people(
        self, person_ids: Iterable[str], start: datetime, end: datetime
    ) -> dict[str, list[Shift]]:
        """Shifts overlapping [start, end) of each person, by start; one query per 500 people."""
        result: dict[str, list[Shift]] = {}
        for chunk in _chunks(list(dict.fromkeys(person_ids))):
            query = _overlapping(select(Shift), Shift.person_id.in_(chunk), start, end)
            for shift in self.session.scalars(query):
                result.setdefault(shift.person_id, []).append(shift)
        return result

    def shifts_for_role(self, role: str, start: datetime, end: datetime) -> list[Shift]:
        """Shifts of `role` overlapping [start, end), by start then person."""
        return self.shifts_for_roles([role], start, end).get(role, [])

    def shifts_for_roles(
        self, roles: Iterable[str], start: datetime, end: datetime
    ) -> dict[str, list[Shift]]:
        """Shifts of each role overlapping [start, end), by start then person."""
        wanted = list(dict.fromkeys(roles))
        if not wanted:
            return {}
        query = _overlapping(select(Shift), Shift.role.in_(wanted), start, end)
        result: dict[str, list[Shift]] = {}
        for shift in self.session.scalars(query):
            result.setdefault(shift.role, []).append(shift)
        return result

    def people_on_shift(self, t: datetime, role: str | None = None) -> list[tuple[Person, Shift]]:
        """Active people holding a shift (of `role`, if given) at t, by shift start then person."""
        query = select(Shift).where(
            Shift.start_at >= t - _MAX_SHIFT, Shift.start_at <= t, Shift.end_at > t
        )
        if role is not None:
            query = query.where(Shift.role == role)
        shifts = list(self.session.scalars(query.order_by(Shift.start_at, Shift.person_id)))
        people = self.people_by_ids(s.person_id for s in shifts)
        return [
            (people[s.person_id], s)
            for s in shifts
            if s.person_id in people and people[s.person_id].active
        ]

    # Calendar data ------------------------------------------------------------------------

    def absences_for(self, person_id: str, first_day: date, last_day: date) -> list[Absence]:
        """The person's absences meeting [first_day, last_day] (inclusive dates)."""
        return self.absences_for_people([person_id], first_day, last_day).get(person_id, [])

    def absences_for_people(
        self, person_ids: Iterable[str], first_day: date, last_day: date
    ) -> dict[str, list[Absence]]:
        """Absences meeting [first_day, last_day] of each person."""
        result: dict[str, list[Absence]] = {}
        for chunk in _chunks(list(dict.fromkeys(person_ids))):
            query = select(Absence).where(
                Absence.person_id.in_(chunk),
                Absence.start_date <= last_day,
                Absence.end_date >= first_day,
            )
            for absence in self.session.scalars(query.order_by(Absence.start_date)):
                result.setdefault(absence.person_id, []).append(absence)
        return result

    def closures_between(
        self, first_day: date, last_day: date, applies_to: set[str]
    ) -> list[Closure]:
        """Closures dated in [first_day, last_day] whose applies_to is in the set.

        The range's closures are read once, whatever they apply to, and kept: working times of
        many teams over the same days (a batch of prompts) cost one query.
        """
        if not applies_to:
            return []
        key = (first_day, last_day)
        if key not in self._closures:
            query = select(Closure).where(Closure.date >= first_day, Closure.date <= last_day)
            self._closures[key] = list(
                self.session.scalars(query.order_by(Closure.date, Closure.id))
            )
        return [c for c in self._closures[key] if c.applies_to in applies_to]

    def current_rota_version(self) -> int:
        """The latest imported rota version, or 0 before any import."""
        if self._version is None:
            self._version = self.session.scalar(select(func.max(RotaVersion.version))) or 0
        return self._version

    # Statements -------------------------------------------------------------------------

    def _dialect(self) -> str:
        if self._dialect_name is None:
            self._dialect_name = self.session.get_bind().dialect.name
        return self._dialect_name

    def _rows(self, query: Executable, params: dict[str, Any]) -> Sequence[Row[Any]]:
        """The rows of a query of plain columns, through the connection.

        The ORM adds nothing to such a query but its cost; pending changes are flushed first,
        as the session itself would.
        """
        if self.session.autoflush:
            self.session.flush()
        return self.session.connection().execute(query, params).all()

    # Listing ------------------------------------------------------------------------------

    def people_at_work(self, t: datetime, tz: ZoneInfo) -> list[AtWork]:
        """Everyone at work at t: shift holders first, then people within their hours."""
        result: list[AtWork] = []
        on_shift: set[str] = set()
        for person, shift in self.people_on_shift(t):
            if person.person_id not in on_shift:
                on_shift.add(person.person_id)
                result.append(AtWork(person, self.team(person.team_id), f"shift {shift.role}"))

        day = t.astimezone(tz).date()
        teams = list(self.session.scalars(select(Team).order_by(Team.team_id)))
        for team in teams:
            self._teams.setdefault(team.team_id, team)
        closures = self.closures_between(
            day, day, {"all"} | {t.region for t in teams} | {t.team_id for t in teams}
        )
        # Only members of teams with a working day today can be at work by hours.
        open_teams = [team for team in teams if is_working_day(day, team.region)]
        by_hours: list[AtWork] = []
        for chunk in _chunks([team.team_id for team in open_teams]):
            members = self.session.scalars(
                select(Person)
                .where(Person.team_id.in_(chunk), Person.active.is_(True))
                .order_by(Person.person_id)
            )
            for person in members:
                self._people.setdefault(person.person_id, person)
                if person.person_id in on_shift:
                    continue
                team = self._teams[person.team_id]
                assert team is not None
                text = effective_hours_text(person, team)
                windows = [closure_window(c) for c in closures if closure_applies(c, team)]
                periods = working_periods(day, parse_hours(text), team.region, windows, False, tz)
                if any(s <= t < e for s, e in periods):
                    by_hours.append(AtWork(person, team, f"hours {text or 'Mon-Fri 09:00-17:00'}"))
        absent = self.absences_for_people([a.person.person_id for a in by_hours], day, day)
        result.extend(a for a in by_hours if a.person.person_id not in absent)
        return result

    def people_away(self, t: datetime, tz: ZoneInfo) -> list[Away]:
        """Active people whose weekly hours include t but who are not at work, and why.

        Someone on shift is at work whatever the calendar says, so is never away.
        """
        day = t.astimezone(tz).date()
        on_shift = {person.person_id for person, _ in self.people_on_shift(t)}
        teams = {team.team_id: team for team in self.session.scalars(select(Team))}
        closures = self.closures_between(
            day, day, {"all"} | {t.region for t in teams.values()} | set(teams)
        )
        scheduled: list[Person] = []
        for chunk in _chunks(sorted(teams)):
            members = self.session.scalars(
                select(Person)
                .where(Person.team_id.in_(chunk), Person.active.is_(True))
                .order_by(Person.person_id)
            )
            for person in members:
                if person.person_id in on_shift:
                    continue
                hours = parse_hours(effective_hours_text(person, teams[person.team_id]))
                if any(
                    local_instant(day, start, tz) <= t < local_instant(day, end, tz)
                    for start, end in hours.periods(day.weekday())
                ):
                    scheduled.append(person)
        absences = self.absences_for_people([p.person_id for p in scheduled], day, day)
        away: list[Away] = []
        for person in sorted(scheduled, key=lambda p: (p.team_id, p.person_id)):
            team = teams[person.team_id]
            why = _why_away(team, t, day, tz, absences.get(person.person_id, []), closures)
            if why is not None:
                away.append(Away(person, team, why))
        return away


def _why_away(
    team: Team,
    t: datetime,
    day: date,
    tz: ZoneInfo,
    absences: list[Absence],
    closures: list[Closure],
) -> str | None:
    """Why someone within their hours at t is not at work, or None when they are."""
    if absences:
        absence = absences[0]
        reason = absence.reason or "absence"
        return f"absent: {reason} ({absence.start_date:%d %b %Y} to {absence.end_date:%d %b %Y})"
    holiday = bank_holiday_name(day, team.region)
    if holiday is not None:
        return f"bank holiday: {holiday}"
    for closure in closures:
        if closure.date != day or not closure_applies(closure, team):
            continue
        start = local_instant(day, closure.from_time or time(0), tz)
        if start <= t < local_instant(day, closure.to_time, tz):
            return f"closed: {closure.reason or 'closure'} ({closure.applies_to})"
    return None
