"""Tampering with the audit log, as an auditor would try it.

On PostgreSQL the runtime role made by `handover db create-runtime-role` can append to the log
but every way of altering it is refused: UPDATE, DELETE, TRUNCATE, DISABLE TRIGGER, ALTER TABLE,
dropping a trigger, session_replication_role. A superuser can still delete or alter rows, and
`handover log verify` names the first row missing or altered (both databases).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from bot.cli import main
from bot.db import create_db_engine, make_session_factory
from bot.services import audit
from tests.bot.test_audit_chain import tampering
from tests.conftest import _empty_postgres

pytestmark = pytest.mark.chaos

AT = datetime(2026, 12, 26, 2, 10, tzinfo=UTC)
ROLE = f"handover_runtime_{os.getpid()}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_log(factory: sessionmaker[Session], count: int) -> None:
    with factory.begin() as session:
        for i in range(count):
            audit.record(session, "prompt_sent", at=AT + timedelta(minutes=i), actor="dispatcher")


@pytest.fixture
def runtime_role(pg_database_url: str) -> Iterator[str]:
    """The URL of the test database as a freshly made runtime role; dropped afterwards."""
    admin = create_engine(pg_database_url, isolation_level="AUTOCOMMIT")
    yield make_url(pg_database_url).set(username=ROLE).render_as_string(hide_password=False)
    with admin.connect() as conn:
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": ROLE}).scalar():
            conn.execute(text(f'DROP OWNED BY "{ROLE}"'))
            conn.execute(text(f'DROP ROLE "{ROLE}"'))
    admin.dispose()


ATTEMPTS = {
    "update": "UPDATE audit_log SET event = 'tampered'",
    "delete": "DELETE FROM audit_log",
    "truncate": "TRUNCATE audit_log",
    "disable trigger": "ALTER TABLE audit_log DISABLE TRIGGER USER",
    "alter table": "ALTER TABLE audit_log ADD COLUMN note text",
    "drop trigger": "DROP TRIGGER audit_log_no_update ON audit_log",
    "replica mode": "SET session_replication_role = replica",
    "delete the chain head": "DELETE FROM audit_chain",
    "truncate the chain head": "TRUNCATE audit_chain",
    "drop the log": "DROP TABLE audit_log",
    "make itself owner": "ALTER TABLE audit_log OWNER TO CURRENT_USER",
    "create a role": "CREATE ROLE handover_helper SUPERUSER",
}


def test_the_runtime_role_appends_but_cannot_tamper(
    pg_database_url: str, runtime_role: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Roles and privileges are PostgreSQL's; SQLite has only its file's permissions.
    _empty_postgres(pg_database_url)
    monkeypatch.setenv("DATABASE_URL", pg_database_url)
    code, out, err = run(capsys, "db", "create-runtime-role", ROLE)
    assert (code, err) == (0, "")
    assert out.startswith(f"runtime role {ROLE} created: SELECT, INSERT, UPDATE, DELETE")
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-Pässword\n"))
    code, out, _ = run(capsys, "db", "create-runtime-role", ROLE, "--password-stdin")
    assert code == 0 and "brought into line" in out and "s3cret" not in out

    engine = create_db_engine(runtime_role)
    factory = make_session_factory(engine)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == ROLE
            assert not conn.execute(
                text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = :r"),
                {"r": ROLE},
            ).scalar()
        write_log(factory, 3)  # the single writer works as the runtime role
        refused = {}
        for name, statement in ATTEMPTS.items():
            with pytest.raises((ProgrammingError, DatabaseError)) as error, engine.begin() as c:
                c.execute(text(statement))
            refused[name] = error.value.orig.sqlstate
        # 42501: insufficient privilege (including "must be owner"): refused, not failed.
        assert refused == dict.fromkeys(ATTEMPTS, "42501")
        with factory() as session:
            check = audit.verify_chain(session)
        assert (check.intact, check.rows) == (True, 3)
    finally:
        engine.dispose()


def test_create_runtime_role_refuses_the_owner_sqlite_and_bad_names(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    if db_url.startswith("sqlite"):
        code, _, err = run(capsys, "db", "create-runtime-role", "handover_app")
        assert code == 1 and "a runtime role needs PostgreSQL" in err
        return
    owner = make_url(db_url).username
    code, _, err = run(capsys, "db", "create-runtime-role", owner)
    assert code == 1 and f"{owner} owns the tables" in err
    code, _, err = run(capsys, "db", "create-runtime-role", 'x"; DROP TABLE audit_log; --')
    assert code == 1 and "must be lower-case letters" in err


@pytest.mark.parametrize("change", ["delete", "alter"])
def test_log_verify_catches_a_superusers_deletion_or_alteration(
    db_url: str, engine, session_factory, monkeypatch: pytest.MonkeyPatch, capsys, change: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    write_log(session_factory, 12)
    code, out, err = run(capsys, "log", "verify")
    assert code == 0 and err == ""
    assert out.startswith("audit log intact: 12 rows, the last is row 12 with hash ")
    with tampering(engine) as conn:  # a superuser, or SQLite's file owner
        if change == "delete":
            conn.execute(text("DELETE FROM audit_log WHERE id = 7"))
        else:
            conn.execute(text("UPDATE audit_log SET actor = 'nobody' WHERE id = 7"))
    code, out, err = run(capsys, "log", "verify")
    assert code == 1 and out == ""
    expected = {
        "delete": "row 7 is missing: row 8 names it as the row before, and the last row found "
        "before it is row 6",
        "alter": "row 7 is altered: its contents do not match its hash",
    }[change]
    assert err == f"handover: audit log broken: {expected}\n(checked 6 rows before it)\n"


def test_log_verify_takes_no_filters(db_url: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    code, _, err = run(capsys, "log", "verify", "--referral", "HO-ABC123")
    assert code == 2 and "takes no --referral" in err
    code, out, _ = run(capsys, "log", "verify")
    assert (code, out) == (0, "audit log intact: no rows yet\n")
