"""Applying a checked rota batch to the database (docs/reference/rota-files.md).

`apply_rota` writes a batch read by `rota.importer.read_rota_files` into the caller's
transaction as a diff against what is stored, so importing the same files twice changes
nothing and creates no new rota version; it refuses an import that would deactivate many
people at once. A dry run is `apply_rota` in a transaction that is rolled back: it runs
exactly the checks of a real import.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from rota.bulk import (
    ShiftScope,
    ShiftSpill,
    apply_shifts,
    source_and_line,
    stored_people,
    stored_teams,
)
from rota.importer import (
    KINDS,
    KnownIds,
    PersonRow,
    Progress,
    RotaBatch,
    TeamRow,
    bulk_objects,
    check_references,
    no_progress,
)
from rota.models import Absence, Closure, NamedRole, Person, RotaVersion, Team
from rota.problems import DeactivationRefused, ProblemLog

__all__ = [
    "DeactivationRefused",
    "ImportResult",
    "apply_rota",
    "current_rota_version",
    "load_known_ids",
]

# Rows per bulk statement: large enough to be fast, small enough for SQLite's parameter limit.
INSERT_CHUNK = 5_000
DELETE_CHUNK = 500
# Serialises concurrent imports on PostgreSQL (SQLite's BEGIN IMMEDIATE already does).
_PG_IMPORT_LOCK = 0x48_414E_444F  # "HANDO"
# The deactivation guard (docs/reference/rota-files.md): more than this share of the active
# people or teams, and more than DEACTIVATE_AT_MOST of them, is refused without --allow-deactivate.
DEACTIVATE_SHARE = 0.10
DEACTIVATE_AT_MOST = 3


@dataclass(frozen=True)
class ImportResult:
    """What an import changed (or, for a dry run, would change)."""

    version: int  # the new version, or the current one when nothing changed
    changed: bool
    counts: dict[str, dict[str, int]]
    files: tuple[str, ...]
    dry_run: bool = False
    shift_roles: tuple[str, ...] | None = None  # shifts replaced for these roles only
    shift_scopes: tuple[ShiftScope, ...] = ()  # and those inside these scopes

    def lines(self) -> list[str]:
        """Human-readable lines for the command line: counts per kind, then the version."""
        out = []
        for kind, counts in self.counts.items():
            label = kind
            if kind == "shifts" and (self.shift_roles is not None or self.shift_scopes):
                parts = [", ".join(self.shift_roles)] if self.shift_roles else []
                parts.extend(scope.label for scope in self.shift_scopes)
                label = f"shifts of {'; '.join(parts) or 'no role'}"
            out.append(f"{label}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
        if not self.changed:
            out.append(f"no changes; rota version {self.version}")
        elif self.dry_run:
            out.append(f"dry run: nothing written; would become rota version {self.version}")
        else:
            out.append(f"rota version {self.version}")
        return out

    def audit_detail(self) -> dict[str, Any]:
        """What the `rota_imported` audit event records."""
        detail: dict[str, Any] = {
            "version": self.version,
            "changed": self.changed,
            "files": list(self.files),
            "counts": self.counts,
        }
        if self.shift_roles is not None:
            detail["shift_roles"] = list(self.shift_roles)
        if self.shift_scopes:
            detail["shift_scopes"] = [
                {
                    "roles": list(scope.roles) if scope.roles is not None else None,
                    "person_id": scope.person_id,
                    "from": scope.start.isoformat() if scope.start else None,
                    "to": scope.end.isoformat() if scope.end else None,
                }
                for scope in self.shift_scopes
            ]
        return detail


def load_known_ids(session: Session) -> KnownIds:
    """The stored team and person ids, active and inactive, and the active people's emails."""
    teams = session.execute(select(Team.team_id, Team.active)).all()
    people = session.execute(select(Person.person_id, Person.active, Person.email)).all()
    emails: dict[str, list[str]] = defaultdict(list)
    for person_id, active, email in people:
        if active and email:
            emails[email.lower()].append(person_id)
    return KnownIds(
        teams=frozenset(t for t, active in teams if active),
        people=frozenset(p for p, active, _ in people if active),
        inactive_teams=frozenset(t for t, active in teams if not active),
        inactive_people=frozenset(p for p, active, _ in people if not active),
        emails={email: tuple(ids) for email, ids in emails.items()},
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
    active_before: int = 0

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


_TEAM_FIELDS = (
    "name",
    "agency",
    "agency_type",
    "region",
    "hours",
    "manager_id",
    "channel",
    "workspace",
)
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
    "phone",
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
    changes.active_before = sum(1 for old in stored.values() if old.active)
    return changes


def _diff_set(
    session: Session,
    model: type[Absence] | type[Closure],
    fields: tuple[str, ...],
    rows: Sequence[Any],
) -> _KindChanges:
    """Rows to add and stored rows to remove to match `rows`."""
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
    "absences": (Absence, ("person_id", "start_date", "end_date", "reason")),
    "closures": (Closure, ("date", "applies_to", "from_time", "to_time", "reason")),
}


def _diff_rota(session: Session, batch: RotaBatch) -> dict[str, _KindChanges]:
    problems = ProblemLog()
    for place in batch.places:
        problems.place_order(place.file, place.sheet)
    team_ids = frozenset(t.team_id for t in batch.teams) if batch.teams is not None else None
    person_ids = frozenset(p.person_id for p in batch.people) if batch.people is not None else None
    check_references(batch, load_known_ids(session), problems, team_ids, person_ids)
    problems.raise_if_any()

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


def _remember_roles(session: Session, roles: set[str]) -> None:
    """Keep every role the shifts name as known, for after shifts naming it are replaced."""
    if not roles:
        return
    known = set(session.scalars(select(NamedRole.role).where(NamedRole.role.in_(roles))))
    new = sorted(roles - known)
    if new:
        session.execute(insert(NamedRole), [{"role": role} for role in new])


def _recheck_shift_references(session: Session, batch: RotaBatch, spill: ShiftSpill) -> None:
    """The people and duty teams the shifts name, against the store as this import leaves it.

    Checked over the distinct people and roles, not a million rows; every row of a bad one is
    named, as reading names them.
    """
    people, teams = stored_people(session), stored_teams(session)
    bad_people = {key.person_id for key in spill.shift_keys() if not people.get(key.person_id)}
    bad_roles = {
        key.role
        for key in spill.shift_keys()
        if key.role.startswith("duty:") and not teams.get(key.role[len("duty:") :])
    }
    if not bad_people and not bad_roles:
        return
    problems = ProblemLog()
    for place in batch.places:
        problems.place_order(place.file, place.sheet)
    stale_people = "people" not in batch.sources
    stale_teams = "teams" not in batch.sources
    for key, loc in spill.locs_of(lambda k: k.person_id in bad_people or k.role in bad_roles):
        source, line = source_and_line(loc)
        place = batch.places[source]
        found: list[tuple[str, str]] = []
        if key.person_id in bad_people:
            note = (
                " (inactive: not in the last people.csv)"
                if stale_people and key.person_id in people
                else ""
            )
            found.append(("person_id", f"unknown person {key.person_id!r}{note}"))
        if key.role in bad_roles:
            team = key.role[len("duty:") :]
            note = " (inactive: not in the last teams.csv)" if stale_teams and team in teams else ""
            found.append(("role", f"unknown team {team!r} in role {key.role}{note}"))
        for column, message in found:
            problems.add(place.file, line, column, message, sheet=place.sheet, event=place.event)
    problems.raise_if_any()


def _guard_deactivations(batch: RotaBatch, changes: dict[str, _KindChanges]) -> None:
    """Refuse deactivating more than 10% (and more than 3) of the active people or teams.

    A truncated people.csv must not empty the rota (docs/reference/rota-files.md).
    """
    problems = ProblemLog()
    for kind in ("people", "teams"):
        change = changes.get(kind)
        if change is None:
            continue
        count, active = len(change.deactivate), change.active_before
        if count <= DEACTIVATE_AT_MOST or count <= DEACTIVATE_SHARE * active:
            continue
        place = batch.places[batch.sources[kind][0]]
        shown = ", ".join(change.deactivate[:10])
        if count > 10:
            shown += f" and {count - 10} more"
        problems.add(
            place.file,
            1,
            "-",
            f"this import would deactivate {count} of the {active} active {kind} "
            f"({shown}): more than {DEACTIVATE_SHARE:.0%} and more than {DEACTIVATE_AT_MOST}. "
            "Is the file complete? If this is intended, import again with --allow-deactivate",
            sheet=place.sheet,
        )
    if problems.total:
        raise DeactivationRefused(problems.sorted(), problems.total)


def _teams_changing_workspace(session: Session, change: _KindChanges | None) -> list[str]:
    """The stored teams whose Slack workspace this import changes."""
    if change is None or not change.updates:
        return []
    new = {row["team_id"]: row.get("workspace") for row in change.updates}
    stored = session.execute(
        select(Team.team_id, Team.workspace).where(Team.team_id.in_(list(new)))
    ).tuples()
    return sorted(team for team, workspace in stored if workspace != new[team])


def apply_rota(
    session: Session,
    batch: RotaBatch,
    now: datetime,
    *,
    allow_deactivate: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Write a validated batch as a diff into the caller's transaction; never commits.

    References are checked again against the store inside the transaction, since the
    store may have changed since the files were read; RotaImportError (DeactivationRefused
    for the guard) before any write. A dry run is this, rolled back by the caller.
    """
    if now.tzinfo is None:
        raise ValueError("apply_rota needs an aware `now`")
    report = progress or no_progress
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_IMPORT_LOCK})
    with bulk_objects():
        changes = _diff_rota(session, batch)
    if not allow_deactivate:
        _guard_deactivations(batch, changes)
    version = current_rota_version(session)

    moved = _teams_changing_workspace(session, changes.get("teams"))
    # Teams before people (people.team_id is a foreign key), people before shifts/absences.
    for kind, model, key in (("teams", Team, "team_id"), ("people", Person, "person_id")):
        change = changes.get(kind)
        if change is None:
            continue
        _insert(session, model, change.inserts, report, kind)
        if change.updates:
            session.execute(update(model), change.updates)
        for chunk in _chunks(change.deactivate, DELETE_CHUNK):
            session.execute(
                update(model)
                .where(getattr(model, key).in_(chunk))
                .values(active=False)
                .execution_options(synchronize_session=False)
            )
    if moved:
        # A Slack ID found by email belongs to the workspace it was found in: look again.
        session.execute(
            update(Person)
            .where(Person.team_id.in_(moved), Person.slack_user_found.is_not(None))
            .values(slack_user_found=None)
            .execution_options(synchronize_session=False)
        )
    counts = {kind: c.counts() for kind, c in changes.items()}
    changed = any(c.changed for c in changes.values())
    spill = batch.shift_spill
    if spill is not None:
        _recheck_shift_references(session, batch, spill)
        counts["shifts"] = apply_shifts(
            session, spill, batch.shift_roles, report, batch.shift_scopes
        )
        _remember_roles(session, {key.role for key in spill.shift_keys()})
        changed = changed or bool(counts["shifts"]["added"] or counts["shifts"]["removed"])
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
        _insert(session, model, change.inserts, report, kind)

    counts = {kind: counts[kind] for kind in KINDS if kind in counts}
    files = batch.displays()
    roles = tuple(sorted(batch.shift_roles)) if batch.shift_roles is not None else None
    scopes = batch.shift_scopes
    if not changed:
        # Every statement above changed nothing: no new version.
        return ImportResult(version, False, counts, files, shift_roles=roles, shift_scopes=scopes)
    session.add(
        RotaVersion(
            version=version + 1,
            imported_at=now.astimezone(UTC),
            files=",".join(files),
            summary=json.dumps(counts, sort_keys=True),
        )
    )
    session.flush()
    return ImportResult(version + 1, True, counts, files, shift_roles=roles, shift_scopes=scopes)


def _insert(
    session: Session, model: type[Any], rows: list[dict[str, Any]], report: Progress, kind: str
) -> None:
    if not rows:
        return
    stage = f"writing {kind}"
    report(stage, 0, len(rows))
    done = 0
    for chunk in _chunks(rows, INSERT_CHUNK):
        # Core insert on the table: one executemany per chunk, no ORM bookkeeping.
        session.execute(insert(model.__table__), chunk)
        done += len(chunk)
        report(stage, done, len(rows))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
