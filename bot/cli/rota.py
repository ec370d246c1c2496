"""`handover rota import PATH... [--dry-run]`: wires the importer to the database and terminal."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import clock_from_env
from bot.db import BATCH_TIMEOUTS, create_db_engine, make_session_factory, sqlite_path
from bot.errors import ServiceUnavailable
from bot.settings import Settings
from rota.importer import (
    KnownIds,
    RotaImportError,
    apply_rota,
    load_known_ids,
    preview_rota,
    read_rota_files,
)

EXIT_OK, EXIT_INPUT = 0, 1
MAX_PRINTED_PROBLEMS = 200


def rota_import(args: argparse.Namespace, settings: Settings) -> int:
    """Validate the rota files, then apply them in one transaction (or only preview them)."""
    progress = sys.stderr.isatty()
    engine = _open_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        known = _stored_ids(factory, settings.database_url)
        try:
            # Validation runs outside the write transaction: on SQLite it would hold the lock.
            batch = read_rota_files(args.paths, settings.timezone, known=known, progress=progress)
            if args.dry_run:
                with factory() as session:
                    result = preview_rota(session, batch)
                    session.rollback()
            else:
                now = clock_from_env().now()
                with factory.begin() as session:
                    result = apply_rota(session, batch, now, progress=progress)
        except RotaImportError as exc:
            print_problems(exc)
            return EXIT_INPUT
    finally:
        engine.dispose()
    for line in result.lines():
        print(line)
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


def _open_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is not None and not path.exists():
        # SQLite would quietly create an empty file; say what is missing instead.
        raise ServiceUnavailable(
            f"no database at {path}; create it with `handover db upgrade` first"
        )
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
