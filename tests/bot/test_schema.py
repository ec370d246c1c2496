from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DatabaseError, IntegrityError

from bot.models import AuditEvent
from bot.services import audit


def test_audit_log_refuses_update_and_delete(session_factory) -> None:
    at = datetime(2026, 12, 26, 2, 10, tzinfo=UTC)
    with session_factory.begin() as session:
        audit.record(session, "referral_received", at=at, referral_id="HO-TEST")
    for statement in (
        update(AuditEvent).values(event="tampered"),
        delete(AuditEvent),
    ):
        with pytest.raises(DatabaseError, match="append-only"), session_factory.begin() as s:
            s.execute(statement)
    with session_factory() as session:
        rows = session.execute(text("SELECT event FROM audit_log")).scalars().all()
    assert rows == ["referral_received"]


def test_a_row_written_around_the_single_writer_is_refused(session_factory) -> None:
    at = datetime(2026, 12, 26, 2, 10, tzinfo=UTC)
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.add(AuditEvent(at=at, event="prompt_sent"))  # no place in the hash chain


def test_datetimes_round_trip_as_aware_utc(session_factory) -> None:
    at = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    with session_factory.begin() as session:
        audit.record(session, "prompt_sent", at=at)
    with session_factory() as session:
        stored = session.query(AuditEvent).one()
    assert stored.at == at and stored.at.tzinfo is UTC
