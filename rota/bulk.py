"""A million shifts in bounded memory: validated rows spilled to disk, keys kept, set-based apply.

Reading keeps, of each valid shift, only what the checks need — its start, end and place,
grouped by person and role — and writes the row itself to a spill file in the form the
database loads fastest (PostgreSQL COPY, SQLite executemany). Applying loads the spill: into
the shifts table directly when the shifts it replaces are none, else into a temporary table
from which set-based statements remove, keep and add rows, so that unchanged shifts keep their
ids. References to people and teams are checked again inside the transaction over the
distinct people and roles, not over the rows.

Into an empty shifts table (a first import) the rows are loaded before its indexes are built,
as pg_restore does: building an index once is several times faster than updating it a
million times. The indexes are the model's, dropped and created again in the same
transaction, so a failed import leaves them as they were.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, NamedTuple

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from rota.models import Person, Shift, Team

# The text a timestamp is stored as on SQLite (SQLAlchemy's DATETIME format); PostgreSQL reads
# it as a timestamp too, so one spill file serves both.
STORED_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
SPILL_BUFFER = 8_192  # rows joined before each write to the spill
_COPY_CHUNK = 1 << 20  # bytes a COPY write
_SQLITE_BATCH = 20_000  # rows an executemany
_STAGE = "handover_stage_shifts"
# Below this many rows, updating the indexes as rows come costs less than building them.
_INDEX_AFTER_ROWS = 50_000

Report = Callable[[str, int, int | None], None]


def location(source: int, line: int) -> int:
    """A row's place packed in one integer: its table (source) and its line."""
    return (source << 32) | line


def source_and_line(loc: int) -> tuple[int, int]:
    """The table (source) and line a `location` packed."""
    return loc >> 32, loc & 0xFFFF_FFFF


class ShiftKey(NamedTuple):
    """Whose shifts, in which role: the key the spill groups shifts by."""

    person_id: str
    role: str


@dataclass(frozen=True)
class ShiftScope:
    """The shifts a calendar declares it carries (docs/rota-files.md, "Calendars").

    A stored shift is inside when it is an active person's, of one of `roles` (any role when
    None), of `person_id` (anyone's when None) and overlaps [start, end) (any time when None):
    the shifts `handover rota ical` selects, so that its export imports back removing nothing
    it did not carry.
    """

    roles: tuple[str, ...] | None
    person_id: str | None
    start: datetime | None  # aware; with `end`, or both None
    end: datetime | None
    label: str  # how the import's counts name it, e.g. `edt_manager (01/01/2027 to 31/01/2027)`

    def holds(self, person_id: str, role: str, start: datetime, end: datetime) -> bool:
        """Whether a shift of the file lies inside the scope (the person's activity aside)."""
        return (
            (self.roles is None or role in self.roles)
            and (self.person_id is None or person_id == self.person_id)
            and (self.start is None or self.end is None or (start < self.end and end > self.start))
        )


class Group:
    """The shifts of one person and role: (start, end, place) triples in one flat array."""

    __slots__ = ("in_order", "last_start", "prefix", "triples")

    def __init__(self, person_id: str, role: str) -> None:
        self.triples = array("q")  # start, end (epoch seconds), loc, start, end, loc, ...
        self.last_start = -(1 << 62)
        self.in_order = True  # starts never went down, as in a file sorted by date
        # The spill line's start. Ids and roles are checked to hold no tab, newline or
        # backslash: COPY's text format needs no escaping.
        self.prefix = f"{person_id}\t{role}\t"

    def __len__(self) -> int:
        return len(self.triples) // 3


class ShiftSpill:
    """Valid shift rows: written to a temporary file, with their keys kept in memory.

    `groups` maps (person_id, role) to the Group of its shifts; `add` is inlined by the
    reader's loop, which is the hot path of a million-row import.
    """

    def __init__(self) -> None:
        # Closed by close(); unnamed, so the system removes it even if the process dies.
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="handover-shifts-")  # noqa: SIM115
        self.buffer: list[str] = []
        self._written = 0
        self.groups: dict[tuple[str, str], Group] = {}

    @property
    def count(self) -> int:
        """The number of shifts spilled."""
        return self._written + len(self.buffer)

    def add(
        self,
        person_id: str,
        role: str,
        start: int,
        end: int,
        loc: int,
        start_text: str,
        end_text: str,
    ) -> None:
        """One valid shift: epoch seconds for the checks, stored texts for the spill."""
        group = self.group(person_id, role)
        if start < group.last_start:
            group.in_order = False
        group.last_start = start
        group.triples.extend((start, end, loc))
        self.buffer.append(f"{group.prefix}{start_text}\t{end_text}\n")
        if len(self.buffer) >= SPILL_BUFFER:
            self.flush()

    def group(self, person_id: str, role: str) -> Group:
        """The group of this person's shifts of this role, new if need be."""
        group = self.groups.get((person_id, role))
        if group is None:
            group = self.groups[(person_id, role)] = Group(person_id, role)
        return group

    def flush(self) -> None:
        """Write the buffered rows to the spill file."""
        if self.buffer:
            self._file.write("".join(self.buffer).encode("utf-8"))
            self._written += len(self.buffer)
            self.buffer.clear()

    def chunks(self) -> Iterator[bytes]:
        """The spilled rows, in the order they were read, as COPY text in large chunks."""
        self.flush()
        self._file.seek(0)
        while chunk := self._file.read(_COPY_CHUNK):
            yield chunk

    def rows(self) -> Iterator[tuple[str, str, str, str]]:
        """The spilled rows as (person_id, role, start, end) stored texts."""
        tail = b""
        for chunk in self.chunks():
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                person_id, role, start, end = line.decode("utf-8").split("\t")
                yield person_id, role, start, end

    def overlaps(self) -> Iterator[tuple[int, int, bool]]:
        """(earlier loc, later loc, same times) for every shift overlapping one before it.

        Per person and role, by start, each shift is compared with the one reaching furthest
        so far; the pair is named in file order, as `_report_overlaps` names them.
        """
        for group in self.groups.values():
            if len(group) < 2:
                continue
            t = group.triples
            order: Any = range(0, len(t), 3)
            if not group.in_order:
                order = sorted(order, key=lambda i: (t[i], t[i + 2]))
            reach = -1
            for i in order:
                if reach >= 0 and t[i] < t[reach + 1]:
                    first, second = sorted((reach, i), key=lambda k: t[k + 2])
                    same = t[first] == t[second] and t[first + 1] == t[second + 1]
                    yield t[first + 2], t[second + 2], same
                if reach < 0 or t[i + 1] > t[reach + 1]:
                    reach = i

    def locs_of(self, wanted: Callable[[ShiftKey], bool]) -> list[tuple[ShiftKey, int]]:
        """The places of the shifts whose key `wanted` picks, in file order."""
        found = []
        for key, group in self.groups.items():
            shift_key = ShiftKey(*key)
            if wanted(shift_key):
                found.extend((shift_key, loc) for loc in group.triples[2::3])
        return sorted(found, key=lambda item: item[1])

    def stored_rows(self) -> list[tuple[int, ShiftKey, int, int]]:
        """Every shift as (loc, key, start, end), in file order (for tests and small batches)."""
        found = []
        for key, group in self.groups.items():
            t = group.triples
            found.extend((t[i + 2], ShiftKey(*key), t[i], t[i + 1]) for i in range(0, len(t), 3))
        return sorted(found)

    def shift_keys(self) -> Iterator[ShiftKey]:
        """Each distinct (person, role) of the shifts."""
        return (ShiftKey(*key) for key in self.groups)

    def close(self) -> None:
        """Close the spill file (the system removes it)."""
        self._file.close()


def stored_text(instant: datetime) -> str:
    """An aware instant as the database stores it: naive UTC text."""
    return instant.astimezone(UTC).replace(tzinfo=None).strftime(STORED_FORMAT)


# --- applying ---------------------------------------------------------------------------------


def stored_people(session: Session) -> dict[str, bool]:
    """Every stored person id and whether they are active."""
    return dict(session.execute(select(Person.person_id, Person.active)).tuples().all())


def stored_teams(session: Session) -> dict[str, bool]:
    """Every stored team id and whether it is active."""
    return dict(session.execute(select(Team.team_id, Team.active)).tuples().all())


def apply_shifts(
    session: Session,
    spill: ShiftSpill,
    roles: frozenset[str] | None,
    report: Report,
    scopes: Sequence[ShiftScope] = (),
) -> dict[str, int]:
    """Replace the stored shifts by the spilled ones; counts.

    Every stored shift is replaced when `roles` is None and there are no `scopes`; otherwise
    only those of `roles` and those inside any of `scopes`.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    scope, params = _replaced(roles, scopes, postgres)
    any_stored = session.execute(
        text(f"SELECT 1 FROM shifts s WHERE 1 = 1 {scope} LIMIT 1"), params
    ).first()
    if any_stored is None:
        # Nothing to keep or remove: load straight into the table, as a raw bulk load would.
        whole_table_empty = (roles is None and not scopes) or session.execute(
            text("SELECT 1 FROM shifts LIMIT 1")
        ).first() is None
        _load_table(session, spill, postgres, report, build_indexes_after=whole_table_empty)
        return {"added": spill.count, "removed": 0, "unchanged": 0}

    if postgres:
        session.execute(
            text(
                f"CREATE TEMPORARY TABLE {_STAGE} (seq bigserial, person_id varchar(64), "
                "role varchar(100), start_at timestamp, end_at timestamp) ON COMMIT DROP"
            )
        )
    else:
        session.execute(text(f"DROP TABLE IF EXISTS temp.{_STAGE}"))
        session.execute(
            text(
                f"CREATE TEMPORARY TABLE {_STAGE} (seq INTEGER PRIMARY KEY, person_id TEXT, "
                "role TEXT, start_at DATETIME, end_at DATETIME)"
            )
        )
    _load(session, _STAGE, spill, postgres, report)
    if postgres:
        session.execute(text(f"ANALYZE {_STAGE}"))
    else:
        session.execute(text(f"CREATE INDEX temp.ix_{_STAGE} ON {_STAGE} (person_id, start_at)"))
    same = (
        "t.person_id = s.person_id AND t.role = s.role AND t.start_at = s.start_at "
        "AND t.end_at = s.end_at"
    )
    # Stored shifts not in the files. The importer is the only writer of shifts and never
    # stores one twice (a file naming one twice is refused, and only shifts not stored are
    # added), so each stored shift matches at most one of the files'.
    removed = session.execute(
        text(
            f"DELETE FROM shifts WHERE id IN (SELECT s.id FROM shifts s WHERE 1 = 1 {scope} "
            f"AND NOT EXISTS (SELECT 1 FROM {_STAGE} t WHERE {same}))"
        ),
        params,
    ).rowcount
    # The files' shifts not stored, in file order; the others are kept with their ids.
    added = session.execute(
        text(
            "INSERT INTO shifts (person_id, role, start_at, end_at) "
            f"SELECT s.person_id, s.role, s.start_at, s.end_at FROM {_STAGE} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM shifts t WHERE {same}) ORDER BY s.seq"
        )
    ).rowcount
    session.execute(text(f"DROP TABLE {_STAGE}" if postgres else f"DROP TABLE temp.{_STAGE}"))
    return {"added": added, "removed": removed, "unchanged": spill.count - added}


def _replaced(
    roles: frozenset[str] | None, scopes: Sequence[ShiftScope], postgres: bool
) -> tuple[str, dict[str, Any]]:
    """The SQL condition (`AND ...` on shifts `s`) of the stored shifts an import replaces."""
    if roles is None and not scopes:
        return "", {}
    params: dict[str, Any] = {}

    def bind(value: Any) -> str:
        name = f"p{len(params)}"
        params[name] = value
        return f":{name}"

    def instant(value: datetime) -> Any:
        # Compared as stored: naive UTC; SQLite's column holds it as text.
        return stored_text(value) if not postgres else value.astimezone(UTC).replace(tzinfo=None)

    found = []
    if roles:
        found.append("s.role IN (" + ", ".join(bind(role) for role in sorted(roles)) + ")")
    for each in scopes:
        # `rota ical --role` exports the active holders' shifts only: keep the others.
        terms = ["EXISTS (SELECT 1 FROM people p WHERE p.person_id = s.person_id AND p.active)"]
        if each.roles is not None:
            names = each.roles or ("",)
            terms.append("s.role IN (" + ", ".join(bind(role) for role in names) + ")")
        if each.person_id is not None:
            terms.append(f"s.person_id = {bind(each.person_id)}")
        if each.start is not None and each.end is not None:
            terms.append(f"s.start_at < {bind(instant(each.end))}")
            terms.append(f"s.end_at > {bind(instant(each.start))}")
        found.append("(" + " AND ".join(terms) + ")")
    return "AND (" + (" OR ".join(found) or "1 = 0") + ")", params


def _load_table(
    session: Session, spill: ShiftSpill, postgres: bool, report: Report, build_indexes_after: bool
) -> None:
    """The spilled rows into the shifts table; its indexes built after, if so asked."""
    if not build_indexes_after or spill.count < _INDEX_AFTER_ROWS:
        _load(session, "shifts", spill, postgres, report)
        return
    connection = session.connection()
    indexes = sorted(Shift.__table__.indexes, key=lambda index: index.name or "")
    for index in indexes:
        index.drop(connection)
    _load(session, "shifts", spill, postgres, report)
    for done, index in enumerate(indexes):
        report("indexing shifts", done, len(indexes))
        index.create(connection)
    report("indexing shifts", len(indexes), len(indexes))


def _load(session: Session, table: str, spill: ShiftSpill, postgres: bool, report: Report) -> None:
    """The spilled rows into `table`, by COPY on PostgreSQL and executemany on SQLite."""
    stage = "writing shifts"
    report(stage, 0, spill.count)
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    columns = "person_id, role, start_at, end_at"
    done = 0
    if postgres:
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for chunk in spill.chunks():
                copy.write(chunk)
                done += chunk.count(b"\n")
                report(stage, done, spill.count)
        return
    cursor = raw.cursor()
    try:
        insert = f"INSERT INTO {table} ({columns}) VALUES (?, ?, ?, ?)"
        batch: list[tuple[str, str, str, str]] = []
        for row in spill.rows():
            batch.append(row)
            if len(batch) >= _SQLITE_BATCH:
                cursor.executemany(insert, batch)
                done += len(batch)
                batch.clear()
                report(stage, done, spill.count)
        cursor.executemany(insert, batch)
        report(stage, spill.count, spill.count)
    finally:
        cursor.close()
