"""The audit log's hash chain: written by the one writer under concurrency, chained over rows
that existed before it, and checked by `verify_chain` (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from bot.db import create_db_engine, make_session_factory
from bot.migrate import upgrade
from bot.models import AuditChainHead, AuditEvent
from bot.services import audit
from bot.services.audit import GENESIS_HASH, ChainHeadMissing, row_digest, verify_chain
from tests.conftest import postgres_database

AT = datetime(2026, 12, 26, 2, 10, 0, 123456, tzinfo=UTC)


def write(factory: sessionmaker[Session], count: int, *, start: int = 0) -> None:
    for i in range(start, start + count):
        with factory.begin() as session:
            audit.record(
                session,
                "prompt_sent",
                at=AT + timedelta(seconds=i),
                referral_id="HO-ABC123",
                actor="dispatcher",
                recipient="hv-kpatel",
                target="person:hv-kpatel",
                detail={"prompt_id": i, "note": "é ✓"},
                rota_version=3,
            )


def check(factory: sessionmaker[Session]) -> audit.ChainCheck:
    with factory() as session:
        return verify_chain(session, batch=7)


@contextmanager
def tampering(engine: Engine) -> Iterator[object]:
    """A connection that is not bound by the log's triggers: the database owner or superuser."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            for trigger in ("audit_log_no_update", "audit_log_no_delete", "audit_chain_no_delete"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
        yield conn


def test_rows_are_chained_in_order_and_verify(session_factory: sessionmaker[Session]) -> None:
    assert check(session_factory) == audit.ChainCheck(0, None, GENESIS_HASH)
    write(session_factory, 20)
    with session_factory() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        head = session.get(AuditChainHead, 1)
    assert [r.id for r in rows] == list(range(1, 21))
    assert rows[0].prev_id is None and rows[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert (after.prev_id, after.prev_hash) == (before.id, before.row_hash)
    assert (head.last_id, head.last_hash) == (20, rows[-1].row_hash)
    # The hash is over the canonical serialisation, reproducible from the stored fields.
    first = rows[0]
    assert first.row_hash == row_digest(
        id=1, prev_id=None, prev_hash=GENESIS_HASH, at=AT, referral_id="HO-ABC123",
        event="prompt_sent", actor="dispatcher", recipient="hv-kpatel",
        target="person:hv-kpatel", detail='{"prompt_id": 0, "note": "é ✓"}', rota_version=3,
    )  # fmt: skip
    assert check(session_factory) == audit.ChainCheck(20, 20, rows[-1].row_hash)


def test_concurrent_writers_chain_in_one_order(session_factory: sessionmaker[Session]) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            write(session_factory, 25, start=n * 100)
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = check(session_factory)
    assert result.intact and result.rows == 100 and result.last_id == 100


def test_a_rolled_back_write_leaves_no_gap(session_factory: sessionmaker[Session]) -> None:
    write(session_factory, 2)
    with pytest.raises(RuntimeError), session_factory.begin() as session:
        audit.record(session, "prompt_sent", at=AT)
        raise RuntimeError("the rest of the transaction failed")
    write(session_factory, 1, start=5)
    with session_factory() as session:
        assert session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)).all() == [1, 2, 3]
    assert check(session_factory).intact


def test_verify_names_an_altered_row(engine: Engine, session_factory) -> None:
    write(session_factory, 10)
    with tampering(engine) as conn:
        conn.execute(text("UPDATE audit_log SET recipient = 'someone-else' WHERE id = 4"))
    result = check(session_factory)
    assert (result.broken_row, result.rows) == (4, 3)
    assert result.problem == "row 4 is altered: its contents do not match its hash"


def test_verify_names_a_row_altered_with_a_recomputed_hash(engine: Engine, session_factory):
    write(session_factory, 10)
    with session_factory() as session:
        row = session.get(AuditEvent, 6)
        forged = row_digest(
            id=6, prev_id=5, prev_hash=row.prev_hash, at=row.at, referral_id=row.referral_id,
            event="acknowledged", actor=row.actor, recipient=row.recipient, target=row.target,
            detail=row.detail, rota_version=row.rota_version,
        )  # fmt: skip
    with tampering(engine) as conn:
        conn.execute(
            text("UPDATE audit_log SET event = 'acknowledged', row_hash = :h WHERE id = 6"),
            {"h": forged},
        )
    result = check(session_factory)
    assert result.broken_row == 6
    assert result.problem == "row 6 is altered: its hash is not the one row 7 recorded"


@pytest.mark.parametrize(
    ("deleted", "broken", "problem"),
    [
        (
            "id = 5",
            5,
            "row 5 is missing: row 6 names it as the row before, and the last row "
            "found before it is row 4",
        ),
        (
            "id IN (5, 6, 7)",
            7,
            "row 7 is missing: row 8 names it as the row before, and the "
            "last row found before it is row 4",
        ),
        (
            "id = 1",
            1,
            "row 1 is missing: row 2 names it as the row before, and the last row "
            "found before it is no row",
        ),
        (
            "id >= 9",
            9,
            "row 9 is missing: the chain's head names row 10 as the last, and the "
            "last row found is 8",
        ),
        (
            "id > 0",
            1,
            "row 1 is missing: the chain's head names row 10 as the last, and the "
            "last row found is none",
        ),
    ],
    ids=["middle", "several", "first", "tail", "all"],
)
def test_verify_names_a_deleted_row(
    engine: Engine, session_factory, deleted: str, broken: int, problem: str
) -> None:
    write(session_factory, 10)
    with tampering(engine) as conn:
        conn.execute(text(f"DELETE FROM audit_log WHERE {deleted}"))
    result = check(session_factory)
    assert (result.broken_row, result.problem) == (broken, problem)


def test_a_deleted_chain_head_is_evident_and_stops_writers(engine: Engine, session_factory):
    write(session_factory, 3)
    with pytest.raises(DatabaseError, match="cannot be deleted"), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_chain"))
    with tampering(engine) as conn:
        conn.execute(text("DELETE FROM audit_chain"))
    assert check(session_factory).problem == "the chain head (table audit_chain) is missing"
    with pytest.raises(ChainHeadMissing), session_factory.begin() as session:
        audit.record(session, "prompt_sent", at=AT)


@contextmanager
def database_at(backend: str, tmp_path: Path, revision: str) -> Iterator[str]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
        upgrade(url, revision)
        yield url
        return
    with postgres_database(f"test_chain_migration_{os.getpid()}") as url:
        upgrade(url, revision)
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migration_chains_the_rows_already_in_the_log(backend: str, tmp_path: Path) -> None:
    with database_at(backend, tmp_path, "9391dffef422") as url:
        engine = create_db_engine(url)
        with engine.begin() as conn:
            for row_id, event in ((1, "referral_received"), (2, "prompt_scheduled"),
                                  (5, "prompt_sent")):  # fmt: skip
                conn.execute(
                    text(
                        "INSERT INTO audit_log (id, at, referral_id, event, detail) "
                        "VALUES (:id, :at, 'HO-OLD001', :event, '{\"a\": 1}')"
                    ),
                    {"id": row_id, "at": AT.replace(tzinfo=None), "event": event},
                )
        engine.dispose()
        upgrade(url)
        engine = create_db_engine(url)
        factory = make_session_factory(engine)
        try:
            result = check(factory)
            assert (result.intact, result.rows, result.last_id) == (True, 3, 5)
            write(factory, 1)
            with factory() as session:
                new = session.get(AuditEvent, 6)
                assert (new.prev_id, new.prev_hash) == (5, result.last_hash)
            assert check(factory).intact
            # The log is still append-only after the rebuild.
            for statement in ("UPDATE audit_log SET event = 'x'", "DELETE FROM audit_log"):
                with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
                    conn.execute(text(statement))
        finally:
            engine.dispose()


def test_many_events_in_one_transaction_and_a_rolled_back_savepoint(
    session_factory: sessionmaker[Session],
) -> None:
    write(session_factory, 1)
    with session_factory.begin() as session:
        for i in range(50):
            audit.record(session, "prompt_sent", at=AT + timedelta(minutes=i))
        with pytest.raises(RuntimeError), session.begin_nested():
            audit.record(session, "breach", at=AT)
            raise RuntimeError("this part is rolled back")
        audit.record(session, "acknowledged", at=AT)
    with session_factory() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [r.id for r in rows] == list(range(1, 53))
    assert [r.event for r in rows[-2:]] == ["prompt_sent", "acknowledged"]
    assert check(session_factory).intact
