"""The statements a computation runs against the audit log, with their plans, on a fresh SQLite
database: its EXPLAIN QUERY PLAN names the index and the bounds each read uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from bot.db import create_db_engine, make_session_factory
from bot.migrate import upgrade

T = TypeVar("T")


@dataclass(frozen=True)
class AuditRead:
    """A statement run, its parameters, and the steps of its plan that read audit_log."""

    statement: str
    parameters: tuple
    steps: list[str]


def audit_reads(
    tmp_path: Path,
    fill: Callable[[sessionmaker[Session]], None],
    compute: Callable[[Session], T],
    *,
    naming: str = "audit_log",
) -> tuple[T, list[AuditRead]]:
    """What `compute` returns on a database `fill` wrote, and each statement it ran that names
    `naming`, with its plan."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    upgrade(str(engine.url))
    statements: list[tuple[str, tuple]] = []

    def keep(conn, cursor, statement, parameters, context, executemany) -> None:
        if naming in statement:
            statements.append((statement, parameters))

    try:
        factory = make_session_factory(engine)
        fill(factory)
        with factory() as session:
            event.listen(engine, "before_cursor_execute", keep)
            try:
                result = compute(session)
            finally:
                event.remove(engine, "before_cursor_execute", keep)
            explain = session.connection().exec_driver_sql
            reads = [
                AuditRead(
                    statement,
                    parameters,
                    [
                        row[-1]
                        for row in explain(f"EXPLAIN QUERY PLAN {statement}", parameters)
                        if "audit_log" in row[-1]
                    ],
                )
                for statement, parameters in statements
            ]
    finally:
        engine.dispose()
    return result, reads
