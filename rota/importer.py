"""Reading, validating and applying the rota CSV files (CONTRACT §2).

`read_rota_files` is pure: it reads and checks every row of every file and either returns a
`RotaBatch` or raises `RotaImportError` with every problem found. `apply_rota` writes a batch
into the caller's transaction as a diff against what is stored, so importing the same files
twice changes nothing and creates no new rota version.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import json
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

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session
from tqdm import tqdm

from rota.hours import HoursSyntaxError, parse_hours
from rota.models import (
    AGENCY_TYPES,
    CONTACT_METHODS,
    MAX_SHIFT_HOURS,
    PERMISSIONS,
    REGIONS,
    Absence,
    Closure,
    Person,
    RotaVersion,
    Shift,
    Team,
)

KINDS = ("teams", "people", "shifts", "absences", "closures")
COLUMNS: dict[str, tuple[str, ...]] = {
    "teams": ("team_id", "name", "agency", "agency_type", "region", "hours", "manager", "channel"),
    "people": (
        "person_id",
        "name",
        "slack_user",
        "email",
        "team_id",
        "role",
        "hours",
        "deputy",
        "permissions",
    ),
    "shifts": ("person_id", "role", "start", "end"),
    "absences": ("person_id", "start", "end", "reason"),
    "closures": ("date", "applies_to", "from", "to", "reason"),
}
# Columns a file may leave out (a file without them stays valid); an absent one reads as empty.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"people": ("contact",)}

# Problems kept in memory; the rest are only counted (a wrong file can have a million).
PROBLEM_LIMIT = 10_000
# Rows per bulk statement: large enough to be fast, small enough for SQLite's parameter limit.
INSERT_CHUNK = 5_000
DELETE_CHUNK = 500
# Serialises concurrent imports on PostgreSQL (SQLite's BEGIN IMMEDIATE already does).
_PG_IMPORT_LOCK = 0x48_414E_444F  # "HANDO"

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ROLE_RE = re.compile(r"^[a-z0-9_:-]+$")
_SLACK_USER_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_CHANNEL_RE = re.compile(r"^[CG][A-Z0-9]{2,}$")
_EMAIL_RE = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^\d{1,2}:\d{2}(?::\d{2})?$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:\d{2})?$")

# Column widths of the schema, checked here so PostgreSQL never refuses a row mid-import.
ID_MAX = 64
NAME_MAX = 200
ROLE_MAX = 100
HOURS_MAX = 500
EMAIL_MAX = 254
SLACK_MAX = 32
REASON_MAX = 200


@dataclass(frozen=True)
class Problem:
    """One problem in a rota file, printed as `FILE:LINE: column: message`."""

    file: str
    line: int
    column: str  # a column name, `header`, or `-` for the whole row or file
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.column}: {self.message}"


class RotaImportError(Exception):
    """The rota files have problems; nothing was changed."""

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        self.problems = problems
        self.total = max(total or 0, len(problems))  # problems beyond PROBLEM_LIMIT are counted
        super().__init__(f"{self.total} problem(s) in the rota files; nothing imported")


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


class ShiftRow(NamedTuple):
    line: int
    person_id: str
    role: str
    start_at: datetime  # aware UTC
    end_at: datetime  # aware UTC


class AbsenceRow(NamedTuple):
    line: int
    person_id: str
    start_date: date
    end_date: date  # inclusive
    reason: str


class ClosureRow(NamedTuple):
    line: int
    date: date
    applies_to: str
    from_time: time | None
    to_time: time | None
    reason: str


class Reference(NamedTuple):
    """A value that must name a team or person, checked once all files are read."""

    file: str
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


@dataclass
class RotaBatch:
    """Validated rows of the rota files given; a kind not given is None and left as stored."""

    files: dict[str, str] = field(default_factory=dict)  # kind -> path as given
    teams: list[TeamRow] | None = None
    people: list[PersonRow] | None = None
    shifts: list[ShiftRow] | None = None
    absences: list[AbsenceRow] | None = None
    closures: list[ClosureRow] | None = None
    references: list[Reference] = field(default_factory=list, repr=False)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind in KINDS if kind in self.files)

    def row_count(self) -> int:
        """The number of data rows in the batch."""
        return sum(len(getattr(self, kind)) for kind in self.kinds)


@dataclass(frozen=True)
class ImportResult:
    """What an import changed (or, for a dry run, would change)."""

    version: int  # the new version, or the current one when nothing changed
    changed: bool
    counts: dict[str, dict[str, int]]
    files: tuple[str, ...]
    dry_run: bool = False

    def lines(self) -> list[str]:
        """Human-readable lines for the command line: counts per kind, then the version."""
        out = [
            f"{kind}: " + ", ".join(f"{n} {what}" for what, n in counts.items())
            for kind, counts in self.counts.items()
        ]
        if not self.changed:
            out.append(f"no changes; rota version {self.version}")
        elif self.dry_run:
            out.append(f"dry run: nothing written; would become rota version {self.version}")
        else:
            out.append(f"rota version {self.version}")
        return out


class _Problems:
    """Collects problems, keeping the first PROBLEM_LIMIT and counting all."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.total = 0

    def add(self, file: str, line: int, column: str, message: str) -> None:
        self.total += 1
        if len(self.items) < PROBLEM_LIMIT:
            self.items.append(Problem(file, line, column, message))

    def raise_if_any(self, file_order: Sequence[str]) -> None:
        if not self.total:
            return
        order = {name: i for i, name in enumerate(file_order)}
        items = sorted(self.items, key=lambda p: (order.get(p.file, len(order)), p.line))
        raise RotaImportError(items, self.total)


# --- reading -----------------------------------------------------------------------------


def read_rota_files(
    paths: Sequence[str | Path],
    tz: tzinfo,
    *,
    known: KnownIds | None = None,
    progress: bool = False,
) -> RotaBatch:
    """Read and validate rota files or folders; raise RotaImportError listing every problem.

    References to kinds not given (a shifts.csv alone naming people) are checked against
    `known`; without it they are left to `apply_rota`, which always checks them again.
    """
    with _bulk_objects():
        return _read_rota_files(paths, tz, known, progress)


@contextmanager
def _bulk_objects() -> Iterator[None]:
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


def _read_rota_files(
    paths: Sequence[str | Path], tz: tzinfo, known: KnownIds | None, progress: bool
) -> RotaBatch:
    problems = _Problems()
    batch = RotaBatch()
    order: list[str] = []
    broken: set[str] = set()  # kinds whose file could not be read: their ids are unknowable
    ids: dict[str, set[str]] = {"teams": set(), "people": set()}

    for kind, display, path in _rota_files(paths, problems, order):
        if kind in batch.files:
            problems.add(
                display,
                1,
                "-",
                f"{kind}.csv is given twice (also {batch.files[kind]}); give each kind once",
            )
            continue
        batch.files[kind] = display
        rows = _read_file(kind, display, path, tz, problems, batch.references, ids, progress)
        if rows is None:
            broken.add(kind)
            rows = []
        setattr(batch, kind, rows)

    _check_overlaps(batch, problems)
    team_ids = None if "teams" in broken else frozenset(ids["teams"])
    person_ids = None if "people" in broken else frozenset(ids["people"])
    _check_references(batch, known, problems, team_ids, person_ids)
    problems.raise_if_any(order)
    return batch


def _rota_files(
    paths: Sequence[str | Path], problems: _Problems, order: list[str]
) -> Iterator[tuple[str, str, Path]]:
    """Expand folders into their CSV files; yield (kind, path as given, path)."""
    for given in paths:
        display = str(given)
        path = Path(given)
        order.append(display)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
            if not files:
                problems.add(display, 1, "-", "no rota CSV files in this folder")
            for file in files:
                file_display = str(path / file.name)
                order.append(file_display)
                kind = _kind_of(file, file_display, problems)
                if kind:
                    yield kind, file_display, file
        elif path.is_file():
            kind = _kind_of(path, display, problems)
            if kind:
                yield kind, display, path
        elif path.exists():  # a device, a pipe or a socket, such as /dev/null
            problems.add(display, 1, "-", "not a regular file or a folder of CSV files")
        else:
            problems.add(display, 1, "-", "no such file or folder")


def _kind_of(path: Path, display: str, problems: _Problems) -> str | None:
    kind = path.name[: -len(".csv")] if path.name.endswith(".csv") else None
    if kind in KINDS:
        return kind
    expected = ", ".join(f"{k}.csv" for k in KINDS)
    problems.add(display, 1, "-", f"unknown rota file name {path.name!r} (expected {expected})")
    return None


def _decode(path: Path, display: str, problems: _Problems) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.add(display, 1, "-", f"cannot read the file: {exc.strerror}")
        return None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Name every offending line; 0x0A never occurs inside a UTF-8 multi-byte sequence.
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add(
                display,
                number,
                "-",
                f"not UTF-8 (byte 0x{raw[exc.start]:02X} at position {exc.start + 1}); "
                "save the file as UTF-8",
            )
    return None


def _records(text_: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the physical line each starts on (quoted values may span lines)."""
    reader = csv.reader(io.StringIO(text_, newline=""), strict=True)
    previous = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _MalformedCsv(previous + 1, str(exc)) from exc
        line = previous + 1
        previous = reader.line_num
        yield line, record


class _MalformedCsv(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def _read_file(
    kind: str,
    display: str,
    path: Path,
    tz: tzinfo,
    problems: _Problems,
    references: list[Reference],
    ids: dict[str, set[str]],
    progress: bool,
) -> list[Any] | None:
    """Check one file row by row; None when it cannot be read at all."""
    content = _decode(path, display, problems)
    if content is None:
        return None
    records = _records(content)
    expected = COLUMNS[kind]
    try:
        header_line, header = 1, []
        for header_line, header in records:  # noqa: B007 - the first non-blank record
            if any(value.strip() for value in header):
                break
        header_names = [name.strip().lower() for name in header]
        optional = OPTIONAL_COLUMNS.get(kind, ())
        if not _check_header(display, header_line, header_names, expected, optional, problems):
            return None
        index: list[int | None] = [header_names.index(column) for column in expected]
        index += [header_names.index(c) if c in header_names else None for c in optional]
        parse_row = _ROW_PARSERS[kind]
        rows: list[Any] = []
        context = _FileContext(display, tz, problems, references, ids, {})
        width = len(header_names)
        with tqdm(
            desc=display, unit=" rows", disable=not progress, file=sys.stderr, leave=False
        ) as bar:
            for line, record in records:
                bar.update()
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # blank line
                if len(record) != width:
                    problems.add(
                        display,
                        line,
                        "-",
                        f"{len(record)} values, expected {width} (as the header)",
                    )
                    continue
                values = [record[i].strip() if i is not None else "" for i in index]
                row = parse_row(context, line, values)
                if row is not None:
                    rows.append(row)
    except _MalformedCsv as exc:
        problems.add(display, exc.line, "-", f"malformed CSV: {exc}")
        return None
    return rows


def _check_header(
    display: str,
    line: int,
    names: list[str],
    expected: tuple[str, ...],
    optional: tuple[str, ...],
    problems: _Problems,
) -> bool:
    if not any(names):
        problems.add(
            display, line, "header", f"empty file; expected the header {','.join(expected)}"
        )
        return False
    ok = True
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.add(display, line, "header", f"column {name!r} given twice")
            ok = False
        seen.add(name)
        if name not in expected and name not in optional:
            known = ",".join(expected)
            if optional:
                known += f"; optional: {','.join(optional)}"
            problems.add(display, line, "header", f"unknown column {name!r} (expected {known})")
            ok = False
    for name in expected:
        if name not in seen:
            problems.add(display, line, "header", f"missing column {name!r}")
            ok = False
    return ok


@dataclass
class _FileContext:
    file: str
    tz: tzinfo
    problems: _Problems
    references: list[Reference]
    ids: dict[str, set[str]]
    first_line: dict[str, int]  # id -> line it first appeared on (duplicate detection)

    def bad(self, line: int, column: str, message: str) -> None:
        self.problems.add(self.file, line, column, message)

    def refer(self, line: int, column: str, kind: str, value: str) -> None:
        self.references.append(Reference(self.file, line, column, kind, value))


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
        if len(value) > ID_MAX or not _ID_RE.match(value):
            self.bad(
                column,
                f"{value!r} is not an id (letters, digits, '.', '_', '-'; at most {ID_MAX})",
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
        parsed = _parse_date(value) if _DATE_RE.match(value) else None
        if parsed is None:
            self.bad(column, f"{value!r} is not a date like 2026-12-21")
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
            self.bad(column, f"{value!r} is not a local date-time like 2026-12-26T17:00")
        return parsed

    def unique(self, column: str, kind: str, value: str | None) -> None:
        """Record the id for references and report a second row with the same id."""
        if not value:
            return
        self.ctx.ids[kind].add(value)
        first = self.ctx.first_line.setdefault(value, self.line)
        if first != self.line:
            self.bad(column, f"duplicate {column} {value!r} (also on line {first})")


def _parse_date(text_: str) -> date | None:
    try:
        return date.fromisoformat(text_)
    except ValueError:
        return None


def _parse_time(text_: str) -> time | None:
    parts = [int(part) for part in text_.split(":")]
    try:
        return time(*parts)
    except ValueError:
        return None


@lru_cache(maxsize=1 << 16)
def _parse_instant(text_: str, tz: tzinfo) -> datetime | None:
    """A date-time as aware UTC; without an offset it is local time in `tz`.

    Cached: a year's rota repeats the same few start and end times over and over.
    """
    if not _DATETIME_RE.match(text_):
        return None
    try:
        parsed = datetime.fromisoformat(text_)
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
    team_id, name, agency, agency_type, region, hours, manager, channel = values
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
    )


def _person_row(ctx: _FileContext, line: int, values: list[str]) -> PersonRow | None:
    person_id, name, slack_user, email, team_id, role, hours, deputy, permissions, contact = values
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
    )


def _shift_row(ctx: _FileContext, line: int, values: list[str]) -> ShiftRow | None:
    person_id, role, start, end = values
    check = _RowCheck(ctx, line)
    if check.identifier("person_id", person_id):
        ctx.refer(line, "person_id", "person", person_id)
    if check.required("role", role):
        if len(role) > ROLE_MAX or not _ROLE_RE.match(role):
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
    return ShiftRow(line, sys.intern(person_id), sys.intern(role), start_at, end_at)


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
    return AbsenceRow(line, person_id, start_date, end_date, reason)


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
    return ClosureRow(line, closed_on, applies_to, from_time, to_time, reason)


_ROW_PARSERS: dict[str, Callable[[_FileContext, int, list[str]], Any]] = {
    "teams": _team_row,
    "people": _person_row,
    "shifts": _shift_row,
    "absences": _absence_row,
    "closures": _closure_row,
}


def _check_overlaps(batch: RotaBatch, problems: _Problems) -> None:
    """Overlapping rows that can only be mistakes: shifts, absences and closures."""
    if batch.shifts:
        _report_overlaps(
            batch.files["shifts"],
            batch.shifts,
            group=lambda r: (r.person_id, r.role),
            start=lambda r: r.start_at,
            end=lambda r: r.end_at,
            inclusive=False,
            what="shift",
            scope="the same person and role",
            problems=problems,
        )
    if batch.absences:
        _report_overlaps(
            batch.files["absences"],
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
            batch.files["closures"],
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
    file: str,
    rows: Sequence[Any],
    *,
    group: Callable[[Any], Any],
    start: Callable[[Any], Any],
    end: Callable[[Any], Any],
    inclusive: bool,
    what: str,
    scope: str,
    problems: _Problems,
) -> None:
    groups: dict[Any, list[Any]] = defaultdict(list)
    for row in rows:
        groups[group(row)].append(row)
    for members in groups.values():
        if len(members) < 2:
            continue
        members.sort(key=lambda r: (start(r), r.line))
        reach = members[0]  # the row reaching furthest so far
        for row in members[1:]:
            overlaps = start(row) <= end(reach) if inclusive else start(row) < end(reach)
            if overlaps:
                first, second = sorted((reach, row), key=lambda r: r.line)
                same = start(first) == start(second) and end(first) == end(second)
                verb = "duplicates" if same else "overlaps"
                problems.add(
                    file, second.line, "-", f"{verb} the {what} on line {first.line} ({scope})"
                )
            if end(row) > end(reach):
                reach = row


def _check_references(
    batch: RotaBatch,
    known: KnownIds | None,
    problems: _Problems,
    team_ids: frozenset[str] | None,
    person_ids: frozenset[str] | None,
) -> None:
    """Report references to teams and people in neither the new files nor the store.

    A kind given in the batch replaces the stored one, so its ids come from the file alone
    (None when that file could not be read: nothing can be said about references to it).
    """
    teams = team_ids if "teams" in batch.files else (known.teams if known else None)
    people = person_ids if "people" in batch.files else (known.people if known else None)
    stale_teams = known.inactive_teams if known and "teams" not in batch.files else frozenset()
    stale_people = known.inactive_people if known and "people" not in batch.files else frozenset()
    for ref in batch.references:
        if ref.kind == "person":
            if people is not None and ref.value not in people:
                note = (
                    " (inactive: not in the last people.csv)" if ref.value in stale_people else ""
                )
                problems.add(ref.file, ref.line, ref.column, f"unknown person {ref.value!r}{note}")
        elif teams is not None and ref.value not in teams:
            note = " (inactive: not in the last teams.csv)" if ref.value in stale_teams else ""
            if ref.kind == "team":
                message = f"unknown team {ref.value!r}{note}"
            elif ref.kind == "duty":
                message = f"unknown team {ref.value!r} in role duty:{ref.value}{note}"
            else:
                message = (
                    f"{ref.value!r} is not all, a region ({', '.join(REGIONS)}) or a known team"
                )
            problems.add(ref.file, ref.line, ref.column, message)


# --- applying ----------------------------------------------------------------------------


def load_known_ids(session: Session) -> KnownIds:
    """The stored team and person ids, active and inactive."""
    teams = session.execute(select(Team.team_id, Team.active)).all()
    people = session.execute(select(Person.person_id, Person.active)).all()
    return KnownIds(
        teams=frozenset(t for t, active in teams if active),
        people=frozenset(p for p, active in people if active),
        inactive_teams=frozenset(t for t, active in teams if not active),
        inactive_people=frozenset(p for p, active in people if not active),
    )


def current_rota_version(session: Session) -> int:
    """The latest rota version, 0 before the first import."""
    return session.scalar(select(func.max(RotaVersion.version))) or 0


@dataclass
class _KindChanges:
    upsert: bool  # teams and people are upserted; the other kinds are replaced as sets
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    deactivate: list[str] = field(default_factory=list)
    delete_ids: list[int] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.inserts or self.updates or self.deactivate or self.delete_ids)

    def counts(self) -> dict[str, int]:
        if self.upsert:
            return {
                "added": len(self.inserts),
                "updated": len(self.updates),
                "deactivated": len(self.deactivate),
                "unchanged": self.unchanged,
            }
        return {
            "added": len(self.inserts),
            "removed": len(self.delete_ids),
            "unchanged": self.unchanged,
        }


_TEAM_FIELDS = ("name", "agency", "agency_type", "region", "hours", "manager_id", "channel")
_PERSON_FIELDS = (
    "name",
    "slack_user",
    "email",
    "team_id",
    "role",
    "hours",
    "deputy_id",
    "permissions",
    "contact",
)


def _diff_upserts(
    session: Session,
    model: type[Team] | type[Person],
    key: str,
    fields: tuple[str, ...],
    rows: Sequence[TeamRow] | Sequence[PersonRow],
) -> _KindChanges:
    changes = _KindChanges(upsert=True)
    columns = [getattr(model, name) for name in (key, *fields, "active")]
    extra = [Person.slack_user_found] if model is Person else []
    stored = {row[0]: row for row in session.execute(select(*columns, *extra)).all()}
    given: set[str] = set()
    for row in rows:
        values = {name: getattr(row, name) for name in fields}
        ident = getattr(row, key)
        given.add(ident)
        old = stored.get(ident)
        if old is None:
            changes.inserts.append({key: ident, **values, "active": True})
            continue
        old_values = dict(zip(fields, old[1 : 1 + len(fields)], strict=True))
        if old_values == values and old.active:
            changes.unchanged += 1
            continue
        update_row = {key: ident, **values, "active": True}
        if model is Person and old_values["email"] != values["email"] and old.slack_user_found:
            # The Slack ID found by the old email belongs to someone else's address now.
            update_row["slack_user_found"] = None
        changes.updates.append(update_row)
    changes.deactivate = sorted(
        ident for ident, old in stored.items() if old.active and ident not in given
    )
    return changes


def _diff_set(
    session: Session,
    model: type[Shift] | type[Absence] | type[Closure],
    fields: tuple[str, ...],
    rows: Sequence[Any],
) -> _KindChanges:
    changes = _KindChanges(upsert=False)
    stored: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    columns = [getattr(model, name) for name in fields]
    for row in session.execute(select(model.id, *columns)).tuples():
        stored[_normalise(row[1:])].append(row[0])
    wanted: set[tuple[Any, ...]] = set()
    for row in rows:
        values = tuple(getattr(row, name) for name in fields)
        key = _normalise(values)
        if key in wanted:
            continue
        wanted.add(key)
        if key in stored:
            changes.unchanged += 1
        else:
            changes.inserts.append(dict(zip(fields, values, strict=True)))
    for key, ids in stored.items():
        # A stored exact duplicate is removed too, so the table ends up equal to the file.
        changes.delete_ids.extend(ids if key not in wanted else ids[1:])
    return changes


def _normalise(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Make stored and parsed instants compare equal whatever their time zone object."""
    return tuple(v.astimezone(UTC) if isinstance(v, datetime) else v for v in values)


_SET_FIELDS: dict[str, tuple[type[Any], tuple[str, ...]]] = {
    "shifts": (Shift, ("person_id", "role", "start_at", "end_at")),
    "absences": (Absence, ("person_id", "start_date", "end_date", "reason")),
    "closures": (Closure, ("date", "applies_to", "from_time", "to_time", "reason")),
}


def _diff_rota(session: Session, batch: RotaBatch) -> dict[str, _KindChanges]:
    problems = _Problems()
    team_ids = frozenset(t.team_id for t in batch.teams) if batch.teams is not None else None
    person_ids = frozenset(p.person_id for p in batch.people) if batch.people is not None else None
    _check_references(batch, load_known_ids(session), problems, team_ids, person_ids)
    problems.raise_if_any(list(batch.files.values()))

    changes: dict[str, _KindChanges] = {}
    if batch.teams is not None:
        changes["teams"] = _diff_upserts(session, Team, "team_id", _TEAM_FIELDS, batch.teams)
    if batch.people is not None:
        changes["people"] = _diff_upserts(
            session, Person, "person_id", _PERSON_FIELDS, batch.people
        )
    for kind, (model, fields) in _SET_FIELDS.items():
        rows = getattr(batch, kind)
        if rows is not None:
            changes[kind] = _diff_set(session, model, fields, rows)
    return changes


def preview_rota(session: Session, batch: RotaBatch) -> ImportResult:
    """What `apply_rota` would change, without writing anything (`--dry-run`)."""
    with _bulk_objects():
        changes = _diff_rota(session, batch)
    changed = any(c.changed for c in changes.values())
    version = current_rota_version(session)
    return ImportResult(
        version=version + 1 if changed else version,
        changed=changed,
        counts={kind: c.counts() for kind, c in changes.items()},
        files=tuple(batch.files[kind] for kind in batch.kinds),
        dry_run=True,
    )


def apply_rota(
    session: Session, batch: RotaBatch, now: datetime, *, progress: bool = False
) -> ImportResult:
    """Write a validated batch as a diff into the caller's transaction; never commits.

    References are checked again against the store inside the transaction, since the
    store may have changed since the files were read; RotaImportError before any write.
    """
    if now.tzinfo is None:
        raise ValueError("apply_rota needs an aware `now`")
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_IMPORT_LOCK})
    with _bulk_objects():
        changes = _diff_rota(session, batch)
    version = current_rota_version(session)
    counts = {kind: c.counts() for kind, c in changes.items()}
    files = tuple(batch.files[kind] for kind in batch.kinds)
    if not any(c.changed for c in changes.values()):
        return ImportResult(version=version, changed=False, counts=counts, files=files)

    # Teams before people (people.team_id is a foreign key), people before shifts/absences.
    for kind, model, key in (("teams", Team, "team_id"), ("people", Person, "person_id")):
        change = changes.get(kind)
        if change is None:
            continue
        _insert(session, model, change.inserts, progress, kind)
        if change.updates:
            session.execute(update(model), change.updates)
        for chunk in _chunks(change.deactivate, DELETE_CHUNK):
            session.execute(
                update(model)
                .where(getattr(model, key).in_(chunk))
                .values(active=False)
                .execution_options(synchronize_session=False)
            )
    for kind, (model, _fields) in _SET_FIELDS.items():
        change = changes.get(kind)
        if change is None:
            continue
        for chunk in _chunks(change.delete_ids, DELETE_CHUNK):
            session.execute(
                delete(model)
                .where(model.id.in_(chunk))
                .execution_options(synchronize_session=False)
            )
        _insert(session, model, change.inserts, progress, kind)

    session.add(
        RotaVersion(
            version=version + 1,
            imported_at=now.astimezone(UTC),
            files=",".join(files),
            summary=json.dumps(counts, sort_keys=True),
        )
    )
    session.flush()
    return ImportResult(version=version + 1, changed=True, counts=counts, files=files)


def _insert(
    session: Session, model: type[Any], rows: list[dict[str, Any]], progress: bool, kind: str
) -> None:
    if not rows:
        return
    with tqdm(
        total=len(rows),
        desc=f"writing {kind}",
        unit=" rows",
        disable=not progress,
        file=sys.stderr,
        leave=False,
    ) as bar:
        for chunk in _chunks(rows, INSERT_CHUNK):
            # Core insert on the table: one executemany per chunk, no ORM bookkeeping.
            session.execute(insert(model.__table__), chunk)
            bar.update(len(chunk))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
