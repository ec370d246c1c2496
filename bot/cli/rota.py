"""`handover rota import | check | ical`: wires the rota domain to the database and terminal."""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from bot.cli.plan import parse_at, rota_session, text_argument
from bot.clock import clock_from_env
from bot.db import BATCH_TIMEOUTS, create_db_engine, make_session_factory
from bot.errors import InputError, ServiceUnavailable
from bot.services import audit
from bot.settings import Settings
from rota.apply import apply_rota, load_known_ids
from rota.bulk import ShiftScope
from rota.calendar import local_instant
from rota.cover import CoverGap, find_cover_gaps, local_label
from rota.ical import CalendarShift, build_shift_calendar
from rota.importer import (
    KnownIds,
    RotaImportError,
    parse_rota_date,
    read_rota_files,
)
from rota.models import RotaVersion
from rota.store import RotaStore

EXIT_OK, EXIT_INPUT = 0, 1
MAX_PRINTED_PROBLEMS = 200
CHECK_DAYS = 14  # `rota check` and the warnings after an import look this far ahead
ICAL_DAYS = 90
MAX_DAYS = 366 * 2
PROGRESS_DELAY = 0.5  # seconds before a bar is drawn: small imports draw none
PROGRESS_REFRESH = 0.1  # seconds between redraws


class TerminalProgress:
    """The importer's progress as a bar on a terminal: rows done of the total, and an ETA."""

    def __init__(self, stream: TextIO, delay: float | None = None) -> None:
        self._stream = stream
        self._delay = PROGRESS_DELAY if delay is None else delay
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        """Show `done` of `total` rows of `stage`, with a new bar when the stage changes."""
        if stage != self._stage or self._bar is None:
            self.close()
            self._stage = stage
            self._bar = tqdm(
                total=total,
                desc=stage,
                unit=" rows",
                file=self._stream,
                leave=False,
                delay=self._delay,
                mininterval=PROGRESS_REFRESH,
                dynamic_ncols=True,
            )
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Clear the bar from the terminal."""
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None


def rota_import(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the rota files, then apply them in one transaction (or roll back a dry run)."""
    progress = TerminalProgress(sys.stderr) if sys.stderr.isatty() else None
    tz = settings.timezone
    ical_role = text_argument("--ical-role", args.ical_role) if args.ical_role else None
    engine = _open_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        known = _stored_ids(factory, settings.database_url)
        now = clock_from_env().now()
        try:
            # Validation runs outside the write transaction: on SQLite it would hold the lock.
            batch = read_rota_files(
                args.paths,
                tz,
                known=known,
                progress=progress,
                cp1252=args.cp1252,
                ical_role=ical_role,
                now=now,
            )
            with batch, factory() as session:
                result = apply_rota(
                    session,
                    batch,
                    now,
                    allow_deactivate=args.allow_deactivate,
                    progress=progress,
                )
                gaps = find_cover_gaps(
                    RotaStore(session), settings.alert_roles, now, now + timedelta(days=CHECK_DAYS)
                )
                if args.dry_run:
                    # The same checks as a real import, then nothing kept.
                    session.rollback()
                    result = replace(result, dry_run=True)
                else:
                    detail = {**result.audit_detail(), "user": _os_user()}
                    audit.record(
                        session,
                        "rota_imported",
                        at=now,
                        detail=detail,
                        rota_version=result.version,
                    )
                    session.commit()
        except RotaImportError as exc:
            if progress is not None:
                progress.close()
            print_problems(exc)
            return EXIT_INPUT
        finally:
            if progress is not None:
                progress.close()
    finally:
        engine.dispose()
    for line in result.lines():
        print(line)
    print_gap_warnings(gaps, tz)
    return EXIT_OK


def print_problems(error: RotaImportError) -> None:
    """Print the first problems as FILE:LINE: column: message, and how many more there are."""
    for problem in error.problems[:MAX_PRINTED_PROBLEMS]:
        print(problem, file=sys.stderr)
    hidden = error.total - min(len(error.problems), MAX_PRINTED_PROBLEMS)
    if hidden:
        print(f"... and {hidden} more problems", file=sys.stderr)
    print(
        f"handover: rota not imported: {error.total} problem(s); nothing was changed",
        file=sys.stderr,
    )


def print_gap_warnings(gaps: list[CoverGap], tz: ZoneInfo) -> None:
    """After an import: each gap in the alert roles' cover over the next CHECK_DAYS days."""
    for gap in gaps:
        print(f"warning: {gap.describe(tz)}", file=sys.stderr)
    if gaps:
        print(
            f"warning: {len(gaps)} gap(s) in the on-call cover in the next {CHECK_DAYS} days; "
            "`handover rota check` lists them",
            file=sys.stderr,
        )


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return None


def _open_engine(url: str) -> Engine:
    # A missing SQLite file was already refused by `handover`'s entry point (bot/cli/__init__.py).
    return create_db_engine(url, timeouts=BATCH_TIMEOUTS)


def _stored_ids(factory: sessionmaker[Session], url: str) -> KnownIds:
    where = make_url(url).render_as_string(hide_password=True)
    try:
        with factory() as session:
            return load_known_ids(session)
    except (OperationalError, ProgrammingError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        missing_table = "no such table" in reason or (
            "relation" in reason and "does not exist" in reason
        )
        if missing_table:
            raise ServiceUnavailable(
                f"the database at {where} has no rota tables; run `handover db upgrade` first"
            ) from exc
        raise ServiceUnavailable(f"database at {where} unavailable: {reason}") from exc


# --- rota check ---------------------------------------------------------------------------------


def day_count(text: str) -> int:
    """`--days N`: a whole number of days from 1 to MAX_DAYS (argparse type)."""
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to {MAX_DAYS}")
    return int(text)


def rota_check(args: argparse.Namespace, settings: Settings) -> int:
    """`handover rota check`: every interval in which an alert role has nobody on shift."""
    tz = settings.timezone
    start = parse_at(args.start, tz, option="--from")
    end = start + timedelta(days=args.days)
    roles = settings.alert_roles
    with rota_session(settings) as session:
        store = RotaStore(session)
        gaps = find_cover_gaps(store, roles, start, end)
        never_named = [role for role in roles if not store.role_known(role)]
    window = f"from {local_label(start, tz)} to {local_label(end, tz)}"
    if not gaps:
        print(f"no gaps: {', '.join(roles)} covered {window}")
        return EXIT_OK
    for gap in gaps:
        print(gap.describe(tz))
    for role in never_named:
        print(
            f"note: no shift in the rota names the role {role} (HANDOVER_ALERT_ROLES)",
            file=sys.stderr,
        )
    print(
        f"handover: {len(gaps)} gap(s) in the cover of {', '.join(roles)} {window}",
        file=sys.stderr,
    )
    return EXIT_INPUT


# --- rota ical ----------------------------------------------------------------------------------


def rota_ical(args: argparse.Namespace, settings: Settings) -> int:
    """`handover rota ical`: an iCalendar file of a role's or a person's shifts on stdout."""
    tz = settings.timezone
    now = clock_from_env().now()
    first_day = _first_day(args.start, now, tz)
    last_day = first_day + timedelta(days=args.days)
    start, end = local_instant(first_day, time(0), tz), local_instant(last_day, time(0), tz)
    with rota_session(settings) as session:
        store = RotaStore(session)
        if args.role is not None:
            role = text_argument("--role", args.role)
            if not store.role_known(role):
                raise InputError(f"unknown role {role}: no shift in the rota names it")
            spans = store.active_shift_spans_for_roles([role], start, end).get(role, [])
            title = f"Handover: {role}"
            scope = ShiftScope((role,), None, start, end, role)
        else:
            person_id = text_argument("--person", args.person)
            person = store.person(person_id)
            if person is None:
                raise InputError(f"unknown person {person_id}")
            if not person.active:
                raise InputError(f"person {person_id} is inactive (not in the last people.csv)")
            spans = store.shift_spans_for_people([person_id], start, end).get(person_id, [])
            title = f"Handover: {person.name}"
            scope = ShiftScope(None, person_id, start, end, person_id)
        people = store.people_by_ids(s.person_id for s in spans)
        version = session.get(RotaVersion, store.current_rota_version())
    shifts = [
        CalendarShift(s.person_id, people[s.person_id].name, s.role, s.start_at, s.end_at)
        for s in spans
    ]
    data = build_shift_calendar(
        shifts,
        title=title,
        tz=tz,
        stamp=version.imported_at if version is not None else now,
        sequence=version.version if version is not None else 0,
        first_day=first_day,
        last_day=last_day,
        scope=scope,
    )
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return EXIT_OK


def _first_day(text: str | None, now: datetime, tz: ZoneInfo) -> date:
    if text is None or not text.strip():
        return now.astimezone(tz).date()
    day = parse_rota_date(text.strip())
    if day is None:
        raise InputError(f"--from {text!r} is not a date like 2026-12-21 or 21/12/2026")
    return day
