"""Reading and validating rota files (docs/reference/rota-files.md).

`read_rota_files` is pure: it reads and checks every row of every file (CSV, the sheets of an
`.xlsx` workbook, the events of an `.ics` calendar) and either returns a `RotaBatch` or raises
`RotaImportError` with every problem found. Applying a batch to the database is
`rota.apply.apply_rota`.

Nothing here draws on a terminal: long steps report through a `Progress` callback.
"""

from __future__ import annotations

import gc
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from rota.bulk import (
    SPILL_BUFFER,
    Group,
    ShiftScope,
    ShiftSpill,
    source_and_line,
    stored_text,
)
from rota.hours import HoursSyntaxError, parse_hours
from rota.ical import Replaced, read_ical_table
from rota.models import (
    AGENCY_TYPES,
    CONTACT_METHODS,
    MAX_SHIFT_HOURS,
    PERMISSIONS,
    REGIONS,
)
from rota.problems import Problem, ProblemLog, RotaImportError
from rota.sources import (
    COLUMNS,
    ID_RE,
    KINDS,
    OPTIONAL_COLUMNS,
    ROLE_RE,
    SourceFile,
    Table,
    read_csv_table,
    read_workbook_tables,
    source_files,
)

__all__ = [
    "COLUMNS",
    "KINDS",
    "KnownIds",
    "Problem",
    "RotaBatch",
    "RotaImportError",
    "local_to_utc",
    "parse_rota_date",
    "read_rota_files",
]

# Repeating calendar events are expanded this far past `now` (or the feed's last event).
ICAL_HORIZON = timedelta(days=366)
# A progress report every this many rows.
PROGRESS_EVERY = 5_000

_SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_CHANNEL_RE = re.compile(r"^[CG][A-Z0-9]{2,}$")
_SLACK_TEAM_RE = re.compile(r"^T[A-Z0-9]{2,31}$")
# A work phone as people write it: digits, spaces, +, brackets, dots and dashes; 6 digits at least.
_PHONE_RE = re.compile(r"^\+?[0-9 ().-]{6,32}$")
_EMAIL_RE = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UK_DATE_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_TIME_RE = re.compile(r"^\d{1,2}:\d{2}(?::\d{2})?$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:\d{2})?$")
_UK_DATETIME_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})[T ](\d{1,2}):(\d{2})(?::(\d{2}))?$")

# Column widths of the schema, checked here so PostgreSQL never refuses a row mid-import.
ID_MAX = 64
NAME_MAX = 200
ROLE_MAX = 100
HOURS_MAX = 500
EMAIL_MAX = 254
PHONE_MAX = 32
SLACK_MAX = 32
REASON_MAX = 200

Progress = Callable[[str, int, int | None], None]
"""Told (stage, done, total) as a long step goes on; total is None when unknown."""


def no_progress(stage: str, done: int, total: int | None) -> None:
    """A `Progress` that reports nothing."""
    return None


class Place(NamedTuple):
    """A table rows come from: a CSV file, a sheet of a workbook or a calendar."""

    file: str
    sheet: str | None = None
    event: bool = False  # its rows are numbered by event

    @property
    def display(self) -> str:
        """As named in messages and recorded with the rota version."""
        return self.file if self.sheet is None else f"{self.file}:{self.sheet}"

    def where(self, line: int) -> str:
        """How a message points at one of its rows: `line 4`, `row 4` or `EVENT 4`."""
        if self.event:
            return f"EVENT {line}"
        return f"row {line}" if self.sheet is not None else f"line {line}"


class TeamRow(NamedTuple):
    line: int
    team_id: str
    name: str
    agency: str
    agency_type: str
    region: str
    hours: str | None
    manager_id: str | None
    channel: str | None
    workspace: str | None = None  # a partner's Slack team ID; None: the home workspace
    source: int = 0  # the index of its Place in the batch


class PersonRow(NamedTuple):
    line: int
    person_id: str
    name: str
    slack_user: str | None
    email: str | None
    team_id: str
    role: str
    hours: str | None
    deputy_id: str | None
    permissions: str
    contact: str = CONTACT_METHODS[0]
    phone: str | None = None
    source: int = 0


class ShiftRow(NamedTuple):
    line: int
    person_id: str
    role: str
    start_at: datetime  # aware UTC
    end_at: datetime  # aware UTC
    source: int = 0


class AbsenceRow(NamedTuple):
    line: int
    person_id: str
    start_date: date
    end_date: date  # inclusive
    reason: str
    source: int = 0


class ClosureRow(NamedTuple):
    line: int
    date: date
    applies_to: str
    from_time: time | None
    to_time: time | None
    reason: str
    source: int = 0


class Reference(NamedTuple):
    """A value that must name a team or person, checked once all files are read."""

    source: int
    line: int
    column: str
    kind: str  # team | person | duty | applies_to
    value: str


@dataclass(frozen=True)
class KnownIds:
    """The team and person ids already stored, for references from files not re-imported."""

    teams: frozenset[str] = frozenset()
    people: frozenset[str] = frozenset()
    inactive_teams: frozenset[str] = frozenset()
    inactive_people: frozenset[str] = frozenset()
    emails: dict[str, tuple[str, ...]] = field(default_factory=dict)  # active people's, lower


@dataclass
class RotaBatch:
    """Validated rows of the rota files given; a kind not given is None and left as stored."""

    places: list[Place] = field(default_factory=list)  # every table read, by source index
    sources: dict[str, list[int]] = field(default_factory=dict)  # kind -> its places
    teams: list[TeamRow] | None = None
    people: list[PersonRow] | None = None
    # Shifts can be a million: spilled to disk, with only their keys in memory.
    shift_spill: ShiftSpill | None = None
    absences: list[AbsenceRow] | None = None
    closures: list[ClosureRow] | None = None
    # When shifts came from calendars alone: the roles whose shifts they replace (those of
    # the calendars declaring no scope), and the scopes the others declare.
    shift_roles: frozenset[str] | None = None
    shift_scopes: tuple[ShiftScope, ...] = ()
    references: list[Reference] = field(default_factory=list, repr=False)

    @property
    def shifts(self) -> list[ShiftRow] | None:
        """The shifts read, in file order, as rows (for tests and small batches)."""
        if self.shift_spill is None:
            return None
        rows = []
        for loc, key, start, end in self.shift_spill.stored_rows():
            source, line = source_and_line(loc)
            start_at = datetime.fromtimestamp(start, UTC)
            end_at = datetime.fromtimestamp(end, UTC)
            rows.append(ShiftRow(line, key.person_id, key.role, start_at, end_at, source))
        return rows

    def close(self) -> None:
        """Remove the spill file; the batch cannot be applied after."""
        if self.shift_spill is not None:
            self.shift_spill.close()

    def __enter__(self) -> RotaBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of rota file the batch holds, in KINDS' order."""
        return tuple(kind for kind in KINDS if kind in self.sources)

    @property
    def files(self) -> dict[str, str]:
        """The first table of each kind, as named."""
        return {kind: self.places[self.sources[kind][0]].display for kind in self.kinds}

    def displays(self) -> tuple[str, ...]:
        """Every table read, kind by kind, as named."""
        return tuple(self.places[i].display for kind in self.kinds for i in self.sources[kind])

    def row_count(self) -> int:
        """The number of data rows in the batch."""
        return sum(
            self.shift_spill.count
            if kind == "shifts" and self.shift_spill is not None
            else len(getattr(self, kind) or ())
            for kind in self.kinds
        )


# --- reading -----------------------------------------------------------------------------


def read_rota_files(
    paths: Sequence[str | Path],
    tz: tzinfo,
    *,
    known: KnownIds | None = None,
    progress: Progress | None = None,
    cp1252: bool = False,
    ical_role: str | None = None,
    now: datetime | None = None,
) -> RotaBatch:
    """Read and validate rota files or folders; raise RotaImportError listing every problem.

    References to kinds not given (a shifts.csv alone naming people) are checked against
    `known`; without it they are left to `apply_rota`, which always checks them again.
    `cp1252` reads CSV files that are not UTF-8 as Windows-1252; `ical_role` is the role of
    calendar events that name none; `now` bounds the expansion of repeating events.
    """
    with bulk_objects():
        return _Reader(tz, known, progress or no_progress, cp1252, ical_role, now).read(paths)


@contextmanager
def bulk_objects() -> Iterator[None]:
    """Pause the cyclic garbage collector while creating a million acyclic row tuples.

    Each collection would walk every live row; the rows hold no cycles, so nothing is lost.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Reader:
    """One reading of rota files into a batch."""

    def __init__(
        self,
        tz: tzinfo,
        known: KnownIds | None,
        progress: Progress,
        cp1252: bool,
        ical_role: str | None,
        now: datetime | None,
    ) -> None:
        self.tz = tz
        self.known = known
        self.progress = progress
        self.cp1252 = cp1252
        self.ical_role = ical_role
        self.now = now
        self.problems = ProblemLog()
        self.batch = RotaBatch()
        self.broken: set[str] = set()  # kinds a table of which could not be read
        self.ids: dict[str, set[str]] = {"teams": set(), "people": set()}
        self.first_line: dict[tuple[str, str], tuple[int, int]] = {}  # duplicate ids
        self._emails: dict[str, tuple[str, ...]] | None = None
        self.replaced = Replaced()  # what the calendars read replace

    def read(self, paths: Sequence[str | Path]) -> RotaBatch:
        calendars: list[SourceFile] = []
        tables: list[Table] = []
        closers: list[Callable[[], None]] = []
        try:
            for source in source_files(paths, self.problems):
                if source.format == "csv":
                    tables.append(read_csv_table(source, self.problems, cp1252=self.cp1252))
                elif source.format == "workbook":
                    sheets, close = read_workbook_tables(source, self.problems)
                    tables.extend(sheets)
                    closers.append(close)
                else:
                    calendars.append(source)
            # Teams and people first, so that the rows naming them are checked as they come.
            for table in sorted(tables, key=lambda t: KINDS.index(t.kind)):
                self._read_table(table)
            # Calendars last: their attendees are matched to the people of the files above.
            for source in calendars:
                self._read_calendar(source)
        except BaseException:
            self.batch.close()
            raise
        finally:
            for table in tables:
                table.close()
            for close in closers:
                close()
        batch = self.batch
        _check_overlaps(batch, self.problems)
        team_ids = None if "teams" in self.broken else frozenset(self.ids["teams"])
        person_ids = None if "people" in self.broken else frozenset(self.ids["people"])
        check_references(batch, self.known, self.problems, team_ids, person_ids)
        if self.problems.total:
            batch.close()
        self.problems.raise_if_any()
        return batch

    def _read_calendar(self, source: SourceFile) -> None:
        if self.now is None:
            raise ValueError("reading a calendar needs `now`")
        if self.ical_role is not None and not ROLE_RE.match(self.ical_role):
            self.problems.add(
                source.display,
                1,
                "-",
                f"--ical-role {self.ical_role!r} is not a role (lower-case letters, digits, _ : -)",
            )
            return
        table = read_ical_table(
            source,
            self.problems,
            tz=self.tz,
            until=self.now + ICAL_HORIZON,
            default_role=self.ical_role,
            people_for_email=self._people_for_email,
            replaced=self.replaced,
        )
        spreadsheet_shifts = "shifts" in self.batch.sources and any(
            not self.batch.places[i].event for i in self.batch.sources["shifts"]
        )
        try:
            self._read_table(table, additive=True)
        finally:
            table.close()
        if not spreadsheet_shifts and "shifts" in self.batch.sources:
            replaced = self.replaced
            roles = set(replaced.roles)
            if self.ical_role is not None and replaced.unscoped:
                roles.add(self.ical_role)
            self.batch.shift_roles = frozenset(roles)
            self.batch.shift_scopes = tuple(replaced.scopes)

    def _people_for_email(self, email: str) -> tuple[str, ...]:
        """The people an address belongs to: in the people file given, else in the store."""
        if self.batch.people is None and "people" not in self.broken:
            return self.known.emails.get(email, ()) if self.known else ()
        if self._emails is None:
            found: dict[str, list[str]] = defaultdict(list)
            for person in self.batch.people or ():
                if person.email:
                    found[person.email.lower()].append(person.person_id)
            self._emails = {address: tuple(ids) for address, ids in found.items()}
        return self._emails.get(email, ())

    def _read_table(self, table: Table, *, additive: bool = False) -> None:
        """Check one table row by row into the batch (`additive`: more rows of its kind)."""
        kind = table.kind
        place = Place(table.file, table.sheet, table.event_numbers)
        source = len(self.batch.places)
        self.batch.places.append(place)
        self.problems.place_order(table.file, table.sheet)
        given = self.batch.sources.get(kind)
        if given and not (additive or all(self.batch.places[i].event for i in given)):
            first = self.batch.places[given[0]].display
            self.problems.add(
                table.file,
                table.header_line or 1,
                "-",
                f"the {kind} are given twice (also {first}); give each kind once",
                sheet=table.sheet,
            )
            return
        self.batch.sources.setdefault(kind, []).append(source)
        if kind == "shifts":
            if self.batch.shift_spill is None:
                self.batch.shift_spill = ShiftSpill()
            rows: Any = None
        else:
            rows = getattr(self.batch, kind)
            if rows is None:
                rows = []
                setattr(self.batch, kind, rows)
        header_ok = not table.broken and (
            table.event_numbers
            or _check_header(
                place,
                table.header_line,
                table.columns,
                COLUMNS[kind],
                OPTIONAL_COLUMNS.get(kind, ()),
                self.problems,
            )
        )
        if not header_ok:
            self.broken.add(kind)
            return
        index: list[int | None] = [table.columns.index(column) for column in COLUMNS[kind]]
        index += [
            table.columns.index(c) if c in table.columns else None
            for c in OPTIONAL_COLUMNS.get(kind, ())
        ]
        context = _FileContext(place, source, self, table.flagged)
        stage = f"reading {place.display}"
        total = table.total_lines
        self.progress(stage, 0, total)
        if kind == "shifts":
            assert self.batch.shift_spill is not None
            line = _ShiftReader(self, context, self.batch.shift_spill).read(table, index, stage)
        else:
            parse_row = _ROW_PARSERS[kind]
            countdown = PROGRESS_EVERY
            line = 0
            for line, record in table.rows:
                countdown -= 1
                if not countdown:
                    countdown = PROGRESS_EVERY
                    self.progress(stage, line, total)
                values = [record[i].strip() if i is not None else "" for i in index]
                row = parse_row(context, line, values)
                if row is not None and line not in table.flagged:
                    rows.append(row)
        self.progress(stage, total if total is not None else line, total)
        if table.broken:
            self.broken.add(kind)

    def person_ids(self) -> frozenset[str] | None:
        """The people rows may name: those of the people file read, else the stored ones."""
        if "people" in self.broken:
            return None
        if self.batch.people is not None:
            return frozenset(self.ids["people"])
        return self.known.people if self.known else None

    def team_ids(self) -> frozenset[str] | None:
        """The teams rows may name: those of the teams file read, else the stored ones."""
        if "teams" in self.broken:
            return None
        if self.batch.teams is not None:
            return frozenset(self.ids["teams"])
        return self.known.teams if self.known else None


class _ShiftReader:
    """Checks shift rows fast: each distinct person and role, and start and end, once.

    A row that passes every check goes straight to the spill; any other row is checked again
    by `_shift_row`, which says exactly what is wrong with it.
    """

    def __init__(self, reader: _Reader, context: _FileContext, spill: ShiftSpill) -> None:
        self.reader = reader
        self.context = context
        self.spill = spill
        self.people = reader.person_ids()
        self.teams = reader.team_ids()
        # (person text, role text) -> its group of shifts, or None when either is wrong.
        self.groups: dict[tuple[str, str], Group | None] = {}
        # (start text, end text) -> (start, end in epoch seconds, the spill's end of line),
        # or None when either is wrong or the shift is too long.
        self.times: dict[tuple[str, str], tuple[int, int, str] | None] = {}
        self.max_seconds = MAX_SHIFT_HOURS * 3600

    def read(self, table: Table, index: list[int], stage: str) -> int:
        """Every row of the table into the spill; the last line read."""
        spill, context, flagged = self.spill, self.context, table.flagged
        groups, times, buffer = self.groups, self.times, spill.buffer
        loc_base = context.source << 32
        i_person, i_role, i_start, i_end = index
        progress, total = self.reader.progress, table.total_lines
        countdown = PROGRESS_EVERY
        line = 0
        missing = _MISSING
        for line, record in table.rows:
            countdown -= 1
            if not countdown:
                countdown = PROGRESS_EVERY
                progress(stage, line, total)
            who = (record[i_person].strip(), record[i_role].strip())
            when = (record[i_start].strip(), record[i_end].strip())
            group = groups.get(who, missing)
            if group is missing:
                group = groups[who] = self._group(*who)
            span = times.get(when, missing)
            if span is missing:
                if len(times) >= _TIMES_CACHED:
                    times.clear()  # a file of ever new times must not grow the cache for ever
                span = times[when] = self._span(*when)
            if group is None or span is None or (flagged and line in flagged):
                # Let the full check say what is wrong (it reports nothing for a good row).
                row = _shift_row(context, line, [*who, *when])
                if row is not None and line not in flagged:
                    spill.add(
                        row.person_id,
                        row.role,
                        int(row.start_at.timestamp()),
                        int(row.end_at.timestamp()),
                        loc_base | line,
                        stored_text(row.start_at),
                        stored_text(row.end_at),
                    )
                continue
            # ShiftSpill.add, inlined: this loop runs once a row of a million.
            start, end, tail = span
            if start < group.last_start:
                group.in_order = False
            group.last_start = start
            group.triples.extend((start, end, loc_base | line))
            buffer.append(group.prefix + tail)
            if len(buffer) >= SPILL_BUFFER:
                spill.flush()
        return line

    def _group(self, person: str, role: str) -> Group | None:
        if not person or len(person) > ID_MAX or not ID_RE.match(person):
            return None
        if self.people is not None and person not in self.people:
            return None
        if not role or len(role) > ROLE_MAX or not ROLE_RE.match(role):
            return None
        if role.startswith("duty:"):
            team = role[len("duty:") :]
            if not team or (self.teams is not None and team not in self.teams):
                return None
        return self.spill.group(sys.intern(person), sys.intern(role))

    def _span(self, start_text: str, end_text: str) -> tuple[int, int, str] | None:
        tz = self.reader.tz
        start = _parse_instant(start_text, tz) if start_text else None
        end = _parse_instant(end_text, tz) if end_text else None
        if start is None or end is None:
            return None
        seconds = int(end.timestamp()) - int(start.timestamp())
        if not 0 < seconds <= self.max_seconds:
            return None
        return (
            int(start.timestamp()),
            int(end.timestamp()),
            f"{stored_text(start)}\t{stored_text(end)}\n",
        )


_MISSING: Any = object()
# Start and end pairs remembered while reading shifts: a year's rota repeats a few thousand.
_TIMES_CACHED = 100_000


def _check_header(
    place: Place,
    line: int,
    names: list[str],
    expected: tuple[str, ...],
    optional: tuple[str, ...],
    problems: ProblemLog,
) -> bool:
    def bad(message: str) -> None:
        problems.add(place.file, line, "header", message, sheet=place.sheet)

    if not any(names):
        bad(f"empty file; expected the header {','.join(expected)}")
        return False
    ok = True
    seen: set[str] = set()
    for name in names:
        if name in seen:
            bad(f"column {name!r} given twice")
            ok = False
        seen.add(name)
        if name not in expected and name not in optional:
            known = ",".join(expected)
            if optional:
                known += f"; optional: {','.join(optional)}"
            bad(f"unknown column {name!r} (expected {known})")
            ok = False
    for name in expected:
        if name not in seen:
            bad(f"missing column {name!r}")
            ok = False
    return ok


class _FileContext:
    """What the row checks of one table share: where its rows come from, and the reader."""

    __slots__ = ("flagged", "place", "problems", "reader", "references", "source", "tz")

    def __init__(
        self, place: Place, source: int, reader: _Reader, flagged: dict[int, set[str]]
    ) -> None:
        self.place = place
        self.source = source
        self.reader = reader
        self.flagged = flagged  # cells whose problem the reading already reported
        self.tz = reader.tz
        self.problems = reader.problems
        self.references = reader.batch.references

    def bad(self, line: int, column: str, message: str) -> None:
        flagged = self.flagged.get(line)
        if flagged is not None and column in flagged:
            return  # one problem a cell: its reading already said what is wrong
        place = self.place
        self.problems.add(place.file, line, column, message, sheet=place.sheet, event=place.event)

    def refer(self, line: int, column: str, kind: str, value: str) -> None:
        self.references.append(Reference(self.source, line, column, kind, value))


class _RowCheck:
    """Checks of one row's values; `ok` turns False at the first problem."""

    __slots__ = ("ctx", "line", "ok")

    def __init__(self, ctx: _FileContext, line: int) -> None:
        self.ctx = ctx
        self.line = line
        self.ok = True

    def bad(self, column: str, message: str) -> None:
        self.ok = False
        self.ctx.bad(self.line, column, message)

    def required(self, column: str, value: str) -> str:
        if not value:
            self.bad(column, "required but empty")
        return value

    def fits(self, column: str, value: str, limit: int) -> str:
        if len(value) > limit:
            self.bad(column, f"longer than {limit} characters")
        return value

    def identifier(self, column: str, value: str, required: bool = True) -> str | None:
        if not value:
            if required:
                self.bad(column, "required but empty")
            return None
        if len(value) > ID_MAX or not ID_RE.match(value):
            self.bad(
                column,
                f"{value!r} is not an id (a letter or digit, then letters, digits, '.', '_', '-'; "
                f"at most {ID_MAX})",
            )
        return value

    def one_of(self, column: str, value: str, allowed: Iterable[str]) -> str:
        allowed = tuple(allowed)
        if not value:
            self.bad(column, f"required but empty (one of {', '.join(allowed)})")
        elif value not in allowed:
            self.bad(column, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def hours(self, column: str, value: str) -> str | None:
        if not value:
            return None
        try:
            parse_hours(value)
        except HoursSyntaxError as exc:
            self.bad(column, str(exc))
        self.fits(column, value, HOURS_MAX)
        return value

    def matches(self, column: str, value: str, pattern: re.Pattern[str], what: str) -> str | None:
        if not value:
            return None
        if len(value) > SLACK_MAX or not pattern.match(value):
            self.bad(column, f"{value!r} is not {what}")
        return value

    def date(self, column: str, value: str) -> date | None:
        if not self.required(column, value):
            return None
        parsed = _parse_date(value)
        if parsed is None:
            self.bad(column, f"{value!r} is not a date like 2026-12-21 or 21/12/2026")
        return parsed

    def time_of_day(self, column: str, value: str) -> time | None:
        if not value:
            return None
        parsed = _parse_time(value) if _TIME_RE.match(value) else None
        if parsed is None:
            self.bad(column, f"{value!r} is not a time of day like 12:00")
        return parsed

    def instant(self, column: str, value: str) -> datetime | None:
        if not self.required(column, value):
            return None
        parsed = _parse_instant(value, self.ctx.tz)
        if parsed is None:
            self.bad(
                column,
                f"{value!r} is not a local date-time like 2026-12-26T17:00 or 26/12/2026 17:00",
            )
        return parsed

    def unique(self, column: str, kind: str, value: str | None) -> None:
        """Record the id for references and report a second row with the same id."""
        if not value:
            return
        reader = self.ctx.reader
        reader.ids[kind].add(value)
        here = (self.ctx.source, self.line)
        first = reader.first_line.setdefault((kind, value), here)
        if first != here:
            where = reader.batch.places[first[0]].where(first[1])
            if first[0] != self.ctx.source:
                where += f" of {reader.batch.places[first[0]].display}"
            self.bad(column, f"duplicate {column} {value!r} (also on {where})")


def _parse_date(text_: str) -> date | None:
    """An ISO date (2026-12-21) or a UK one (21/12/2026), or None."""
    try:
        if _DATE_RE.match(text_):
            return date.fromisoformat(text_)
        uk = _UK_DATE_RE.match(text_)
        if uk:
            day, month, year = (int(part) for part in uk.groups())
            return date(year, month, day)
    except ValueError:
        pass
    return None


def parse_rota_date(text_: str) -> date | None:
    """A date as rota files write it: ISO (2026-12-21) or UK (21/12/2026); None otherwise."""
    return _parse_date(text_)


def _parse_time(text_: str) -> time | None:
    parts = [int(part) for part in text_.split(":")]
    try:
        return time(*parts)
    except ValueError:
        return None


@lru_cache(maxsize=1 << 16)
def _parse_instant(text_: str, tz: tzinfo) -> datetime | None:
    """A date-time (ISO, or UK `26/12/2026 17:00`) as aware UTC; without an offset, local.

    Cached: a year's rota repeats the same few start and end times over and over.
    """
    try:
        if _DATETIME_RE.match(text_):
            parsed = datetime.fromisoformat(text_)
        else:
            uk = _UK_DATETIME_RE.match(text_)
            if uk is None:
                return None
            day, month, year, hour, minute, second = (int(part or 0) for part in uk.groups())
            parsed = datetime(year, month, day, hour, minute, second)  # noqa: DTZ001 - local
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # fold=0: a non-existent local time (the spring gap) moves forward by the gap, and an
        # ambiguous one (the autumn repeat) is the first of the two instants.
        parsed = parsed.replace(tzinfo=tz, fold=0)
    return parsed.astimezone(UTC)


def local_to_utc(value: datetime, tz: tzinfo) -> datetime:
    """A naive local date-time in `tz` as aware UTC, as the importer converts shift times."""
    return value.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _team_row(ctx: _FileContext, line: int, values: list[str]) -> TeamRow | None:
    team_id, name, agency, agency_type, region, hours, manager, channel, workspace = values
    check = _RowCheck(ctx, line)
    check.identifier("team_id", team_id)
    check.unique("team_id", "teams", team_id)
    check.fits("name", check.required("name", name), NAME_MAX)
    check.fits("agency", agency, NAME_MAX)
    check.one_of("agency_type", agency_type, AGENCY_TYPES)
    check.one_of("region", region, REGIONS)
    check.hours("hours", hours)
    if check.identifier("manager", manager, required=False):
        ctx.refer(line, "manager", "person", manager)
    check.matches("channel", channel, _SLACK_CHANNEL_RE, "a Slack channel ID (like C0EDTCARDS)")
    check.matches(
        "workspace", workspace, _SLACK_TEAM_RE, "a Slack workspace (team) ID (like T0POLICE)"
    )
    if not check.ok:
        return None
    return TeamRow(
        line,
        team_id,
        name,
        agency,
        agency_type,
        region,
        hours or None,
        manager or None,
        channel or None,
        workspace or None,
        ctx.source,
    )


def _person_row(ctx: _FileContext, line: int, values: list[str]) -> PersonRow | None:
    (
        person_id,
        name,
        slack_user,
        email,
        team_id,
        role,
        hours,
        deputy,
        permissions,
        contact,
        phone,
    ) = values
    check = _RowCheck(ctx, line)
    check.identifier("person_id", person_id)
    check.unique("person_id", "people", person_id)
    check.fits("name", check.required("name", name), NAME_MAX)
    check.matches("slack_user", slack_user, _SLACK_USER_RE, "a Slack user ID (like U0EDTAMY01)")
    if email and (len(email) > EMAIL_MAX or not _EMAIL_RE.match(email)):
        check.bad("email", f"{email!r} is not an email address")
    if not slack_user and not email:
        check.bad("-", "unreachable: give a slack_user or an email to look the user up by")
    if check.identifier("team_id", team_id):
        ctx.refer(line, "team_id", "team", team_id)
    check.fits("role", role, ROLE_MAX)
    check.hours("hours", hours)
    if check.identifier("deputy", deputy, required=False):
        if deputy == person_id:
            check.bad("deputy", "a person cannot be their own deputy")
        else:
            ctx.refer(line, "deputy", "person", deputy)
    granted: list[str] = []
    for permission in (p.strip() for p in permissions.split(";")):
        if permission and permission not in PERMISSIONS:
            check.bad(
                "permissions", f"{permission!r} is not a permission ({', '.join(PERMISSIONS)})"
            )
        elif permission and permission not in granted:
            granted.append(permission)
    contact = contact.lower() or CONTACT_METHODS[0]
    if contact not in CONTACT_METHODS:
        check.bad("contact", f"{contact!r} is not one of {', '.join(CONTACT_METHODS)}")
    elif "email" in contact and not email:
        check.bad("contact", f"{contact!r} needs an email address")
    phone = " ".join(phone.split())
    if phone and (
        len(phone) > PHONE_MAX or not _PHONE_RE.match(phone) or sum(c.isdigit() for c in phone) < 6
    ):
        check.bad("phone", f"{phone!r} is not a phone number (like 01603 223344)")
    if not check.ok:
        return None
    return PersonRow(
        line,
        person_id,
        name,
        slack_user or None,
        email or None,
        team_id,
        role,
        hours or None,
        deputy or None,
        ";".join(p for p in PERMISSIONS if p in granted),
        contact,
        phone or None,
        ctx.source,
    )


def _shift_row(ctx: _FileContext, line: int, values: list[str]) -> ShiftRow | None:
    person_id, role, start, end = values
    check = _RowCheck(ctx, line)
    if check.identifier("person_id", person_id):
        ctx.refer(line, "person_id", "person", person_id)
    if check.required("role", role):
        if len(role) > ROLE_MAX or not ROLE_RE.match(role):
            check.bad("role", f"{role!r} is not a role (lower-case letters, digits, _ : -)")
        elif role.startswith("duty:"):
            team = role[len("duty:") :]
            if team:
                ctx.refer(line, "role", "duty", team)
            else:
                check.bad("role", "duty: needs a team id, like duty:gp-northgate")
    start_at = check.instant("start", start)
    end_at = check.instant("end", end)
    if start_at is not None and end_at is not None:
        if end_at <= start_at:
            check.bad("end", f"end {end} is not after start {start}")
        elif end_at - start_at > timedelta(hours=MAX_SHIFT_HOURS):
            length = (end_at - start_at) / timedelta(hours=1)
            check.bad("end", f"a shift of {length:g} hours is longer than {MAX_SHIFT_HOURS} hours")
    if not check.ok or start_at is None or end_at is None:
        return None
    # Interning shares the few distinct ids and roles among a year's rows.
    return ShiftRow(line, sys.intern(person_id), sys.intern(role), start_at, end_at, ctx.source)


def _absence_row(ctx: _FileContext, line: int, values: list[str]) -> AbsenceRow | None:
    person_id, start, end, reason = values
    check = _RowCheck(ctx, line)
    if check.identifier("person_id", person_id):
        ctx.refer(line, "person_id", "person", person_id)
    start_date = check.date("start", start)
    end_date = check.date("end", end)
    if start_date and end_date and end_date < start_date:
        check.bad("end", f"end {end} is before start {start}")
    check.fits("reason", reason, REASON_MAX)
    if not check.ok or start_date is None or end_date is None:
        return None
    return AbsenceRow(line, person_id, start_date, end_date, reason, ctx.source)


def _closure_row(ctx: _FileContext, line: int, values: list[str]) -> ClosureRow | None:
    day, applies_to, from_text, to_text, reason = values
    check = _RowCheck(ctx, line)
    closed_on = check.date("date", day)
    applies_to_team = applies_to != "all" and applies_to not in REGIONS
    if check.required("applies_to", applies_to) and applies_to_team:
        ctx.refer(line, "applies_to", "applies_to", applies_to)
    from_time = check.time_of_day("from", from_text)
    to_time = check.time_of_day("to", to_text)
    if from_time is not None and to_time is not None and to_time <= from_time:
        check.bad("to", f"to {to_text} is not after from {from_text}")
    check.fits("reason", reason, REASON_MAX)
    if not check.ok or closed_on is None:
        return None
    return ClosureRow(line, closed_on, applies_to, from_time, to_time, reason, ctx.source)


_ROW_PARSERS: dict[str, Callable[[_FileContext, int, list[str]], Any]] = {
    "teams": _team_row,
    "people": _person_row,
    "shifts": _shift_row,
    "absences": _absence_row,
    "closures": _closure_row,
}


def _check_overlaps(batch: RotaBatch, problems: ProblemLog) -> None:
    """Overlapping rows that can only be mistakes: shifts, absences and closures."""
    if batch.shift_spill is not None:
        for first_loc, second_loc, same in batch.shift_spill.overlaps():
            first, second = source_and_line(first_loc), source_and_line(second_loc)
            _report_overlap(
                batch, first, second, same, "shift", "the same person and role", problems
            )
    if batch.absences:
        _report_overlaps(
            batch,
            batch.absences,
            group=lambda r: r.person_id,
            start=lambda r: r.start_date,
            end=lambda r: r.end_date,
            inclusive=True,
            what="absence",
            scope="the same person",
            problems=problems,
        )
    if batch.closures:
        _report_overlaps(
            batch,
            batch.closures,
            group=lambda r: (r.date, r.applies_to),
            start=lambda r: r.from_time or time.min,
            end=lambda r: r.to_time or time.max,
            inclusive=False,
            what="closure",
            scope="the same date and applies_to",
            problems=problems,
        )


def _report_overlaps(
    batch: RotaBatch,
    rows: Sequence[Any],
    *,
    group: Callable[[Any], Any],
    start: Callable[[Any], Any],
    end: Callable[[Any], Any],
    inclusive: bool,
    what: str,
    scope: str,
    problems: ProblemLog,
) -> None:
    groups: dict[Any, list[Any]] = defaultdict(list)
    for row in rows:
        groups[group(row)].append(row)
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda r: (start(r), r.source, r.line))
        reach = members[0]  # the row reaching furthest so far
        for row in members[1:]:
            overlaps = start(row) <= end(reach) if inclusive else start(row) < end(reach)
            if overlaps:
                first, second = sorted((reach, row), key=lambda r: (r.source, r.line))
                same = start(first) == start(second) and end(first) == end(second)
                _report_overlap(
                    batch,
                    (first.source, first.line),
                    (second.source, second.line),
                    same,
                    what,
                    scope,
                    problems,
                )
            if end(row) > end(reach):
                reach = row


def _report_overlap(
    batch: RotaBatch,
    first: tuple[int, int],
    second: tuple[int, int],
    same: bool,
    what: str,
    scope: str,
    problems: ProblemLog,
) -> None:
    """`second` (source, line) overlaps or duplicates `first`, reported at `second`."""
    verb = "duplicates" if same else "overlaps"
    place = batch.places[second[0]]
    where = batch.places[first[0]].where(first[1])
    if first[0] != second[0]:
        where += f" of {batch.places[first[0]].display}"
    problems.add(
        place.file,
        second[1],
        "-",
        f"{verb} the {what} on {where} ({scope})",
        sheet=place.sheet,
        event=place.event,
    )


def check_references(
    batch: RotaBatch,
    known: KnownIds | None,
    problems: ProblemLog,
    team_ids: frozenset[str] | None,
    person_ids: frozenset[str] | None,
) -> None:
    """Report references to teams and people in neither the new files nor the store.

    A kind given in the batch replaces the stored one, so its ids come from the file alone
    (None when that file could not be read: nothing can be said about references to it).
    """
    teams = team_ids if "teams" in batch.sources else (known.teams if known else None)
    people = person_ids if "people" in batch.sources else (known.people if known else None)
    stale_teams = known.inactive_teams if known and "teams" not in batch.sources else frozenset()
    stale_people = known.inactive_people if known and "people" not in batch.sources else frozenset()
    for ref in batch.references:
        place = batch.places[ref.source]
        if ref.kind == "person":
            if people is None or ref.value in people:
                continue
            note = " (inactive: not in the last people.csv)" if ref.value in stale_people else ""
            message = f"unknown person {ref.value!r}{note}"
        else:
            if teams is None or ref.value in teams:
                continue
            note = " (inactive: not in the last teams.csv)" if ref.value in stale_teams else ""
            if ref.kind == "team":
                message = f"unknown team {ref.value!r}{note}"
            elif ref.kind == "duty":
                message = f"unknown team {ref.value!r} in role duty:{ref.value}{note}"
            else:
                message = (
                    f"{ref.value!r} is not all, a region ({', '.join(REGIONS)}) or a known team"
                )
        problems.add(
            place.file, ref.line, ref.column, message, sheet=place.sheet, event=place.event
        )
