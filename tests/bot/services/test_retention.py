"""Retention: the personal data of referrals closed before a cut-off is erased, a verifiable
record that they existed and were purged stays, and the dedupe tables are pruned (SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import String, Text, func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.models import AuditEvent, OutboxMessage, Referral, SlackEvent, SlackRequest, Target
from bot.services.audit import verify_chain
from bot.services.closing import close_referral
from bot.services.intake import (
    SOURCE_API,
    receive_referral,
    referral_detail,
    validate_referral,
)
from bot.services.replay import REPLAY_WINDOW, remember_request
from bot.services.retention import (
    EVENT_ID_RETENTION,
    PurgedReferral,
    run_daily_retention,
    run_retention,
)
from bot.settings import Settings
from rota.models import Base
from tests.handlers.slack_payloads import NOW, build_rota, slack_user

LONDON = ZoneInfo("Europe/London")
SETTINGS = Settings(edt_channel="C0EDTCARDS")
CUTOFF = NOW - timedelta(days=30)


def summary_of(name: str) -> str:
    return f"SUMMARY-{name}: Jane Doe, born 2024-03-02, 12 Acacia Avenue, NHS 943 476 5919"


def reason_of(name: str) -> str:
    return f"REASON-{name}: baby moved to her grandmother in Norwich"


def add_referral(factory: sessionmaker[Session], name: str, *, received: datetime) -> str:
    with factory.begin() as session:
        request = validate_referral(
            session,
            {
                "external_ref": f"LCS-{name}",
                "category": "neglect",
                "urgency": "standard",
                "referrer": "edt-amy",
                "notify": ["person:hv-kpatel", "role:police_dau"],
                "summary": summary_of(name),
            },
            tz=LONDON,
            now=received,
        )
        result = receive_referral(session, request, now=received, settings=SETTINGS,
                                  source=SOURCE_API)  # fmt: skip
        return result.body["referral_id"]


def close(factory: sessionmaker[Session], referral_id: str, name: str, at: datetime) -> None:
    with factory.begin() as session:
        outcome = close_referral(
            session, referral_id, slack_user("edt-amy"), reason_of(name), now=at,
            settings=SETTINGS,
        )  # fmt: skip
        assert outcome.status == "closed"


@pytest.fixture
def referrals(session_factory: sessionmaker[Session]) -> dict[str, str]:
    return build_referrals(session_factory)


def build_referrals(session_factory: sessionmaker[Session]) -> dict[str, str]:
    """OLD closed 100 days ago, RECENT closed 10 days ago, OPEN received 100 days ago."""
    with session_factory.begin() as session:
        build_rota(session)
    ids = {
        name: add_referral(session_factory, name, received=NOW - timedelta(days=days))
        for name, days in (("OLD", 120), ("RECENT", 40), ("OPEN", 100))
    }
    close(session_factory, ids["OLD"], "OLD", NOW - timedelta(days=100))
    close(session_factory, ids["RECENT"], "RECENT", NOW - timedelta(days=10))
    return ids


def all_text(factory: sessionmaker[Session]) -> str:
    """Every string stored in every table, to search for what must be gone."""
    found = []
    with factory() as session:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, (String, Text))]
            if columns:
                for row in session.execute(select(*columns)):
                    found.extend(str(value) for value in row if value is not None)
    return "\n".join(found)


def counts(factory: sessionmaker[Session], referral_id: str) -> tuple[int, int, int]:
    with factory() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model).where(
                model.referral_id == referral_id))
            for model in (Target, OutboxMessage, AuditEvent)
        )  # type: ignore[return-value]  # fmt: skip


def test_the_log_never_carries_a_summary_or_a_close_reason(
    session_factory: sessionmaker[Session], referrals: dict[str, str]
) -> None:
    with session_factory() as session:
        log = "\n".join(d or "" for d in session.scalars(select(AuditEvent.detail)))
        log += "\n".join(str(r) for r in session.execute(select(AuditEvent)).all())
    for name in referrals:
        assert f"SUMMARY-{name}" not in log and f"REASON-{name}" not in log


def test_purge_erases_the_personal_data_of_referrals_closed_before_the_cutoff(
    session_factory: sessionmaker[Session], referrals: dict[str, str]
) -> None:
    old, recent, open_ = referrals["OLD"], referrals["RECENT"], referrals["OPEN"]
    before = counts(session_factory, old)
    with session_factory.begin() as session:
        report = run_retention(session, now=NOW, before=CUTOFF)
    assert report.referrals == [PurgedReferral(old, NOW - timedelta(days=100))]

    with session_factory() as session:
        purged = session.get(Referral, old)
        assert (purged.summary, purged.close_reason, purged.request_hash) == ("", None, "")
        assert purged.purged_at == NOW
        # The minimal record stays: who was asked, when, and how it ended.
        assert (purged.external_ref, purged.category, purged.status) == (
            "LCS-OLD", "neglect", "closed",
        )  # fmt: skip
        for kept in (recent, open_):
            referral = session.get(Referral, kept)
            assert referral.summary.startswith("SUMMARY-") and referral.purged_at is None
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "referral_purged")
        ).one()
        assert (event.referral_id, event.actor, event.at) == (old, "retention", NOW)
        assert json.loads(event.detail) == {
            "closed_at": (NOW - timedelta(days=100)).isoformat(),
            "closed_before": CUTOFF.isoformat(),
            "erased": ["summary", "close_reason", "request_hash"],
        }
        assert verify_chain(session).intact
        detail = referral_detail(session, old, LONDON)
    assert "summary" not in detail and detail["close_reason"] is None
    assert detail["purged_at"] == NOW.astimezone(LONDON).isoformat()
    assert counts(session_factory, old) == (before[0], before[1], before[2] + 1)

    stored = all_text(session_factory)
    assert "SUMMARY-OLD" not in stored and "REASON-OLD" not in stored
    assert "SUMMARY-RECENT" in stored and "REASON-RECENT" in stored  # closed after the cut-off
    assert "SUMMARY-OPEN" in stored  # still open: never purged

    with session_factory.begin() as session:  # a second run finds nothing more
        assert run_retention(session, now=NOW, before=CUTOFF).referrals == []
    with session_factory.begin() as session:  # its content can no longer be compared
        request = validate_referral(
            session,
            {"external_ref": "LCS-OLD", "category": "neglect", "urgency": "standard",
             "referrer": "edt-amy", "notify": ["person:hv-kpatel", "role:police_dau"],
             "summary": summary_of("OLD")},
            tz=LONDON, now=NOW,
        )  # fmt: skip
        again = receive_referral(session, request, now=NOW, settings=SETTINGS, source=SOURCE_API)
    assert (again.status, again.referral.referral_id) == ("conflict", old)


def test_a_dry_run_lists_and_changes_nothing(
    session_factory: sessionmaker[Session], referrals: dict[str, str]
) -> None:
    stored = all_text(session_factory)
    with session_factory.begin() as session:
        report = run_retention(session, now=NOW, before=NOW, dry_run=True)
    assert [p.referral_id for p in report.referrals] == [referrals["OLD"], referrals["RECENT"]]
    assert report.dry_run and all_text(session_factory) == stored


def test_the_dedupe_tables_are_pruned(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        for event_id, age in (("Ev-old", EVENT_ID_RETENTION + timedelta(minutes=1)),
                              ("Ev-new", EVENT_ID_RETENTION - timedelta(minutes=1))):  # fmt: skip
            session.add(SlackEvent(event_id=event_id, received_at=NOW - age))
        signed_at = int(NOW.timestamp())
        assert remember_request(session, "a" * 64, signed_at - 7 * 60)  # expired
        assert remember_request(session, "b" * 64, signed_at - 60)  # still replayable
        assert not remember_request(session, "b" * 64, signed_at - 60)  # the replay
    with session_factory.begin() as session:
        report = run_retention(session, now=NOW, before=None)
    assert (report.referrals, report.slack_events, report.slack_requests) == ([], 1, 1)
    with session_factory() as session:
        assert session.scalars(select(SlackEvent.event_id)).all() == ["Ev-new"]
        assert session.scalars(select(SlackRequest.signature)).all() == ["b" * 64]
        expires = session.get(SlackRequest, "b" * 64).expires_at
    assert expires == datetime.fromtimestamp(signed_at - 60, UTC) + REPLAY_WINDOW


def test_the_daily_pass_purges_only_with_a_retention_period(
    session_factory: sessionmaker[Session], referrals: dict[str, str]
) -> None:
    with session_factory.begin() as session:
        assert run_daily_retention(session, now=NOW, settings=SETTINGS).referrals == []
    thirty_days = replace(SETTINGS, retention_days=30)
    with session_factory.begin() as session:
        report = run_daily_retention(session, now=NOW, settings=thirty_days)
    assert [p.referral_id for p in report.referrals] == [referrals["OLD"]]
    assert report.before == CUTOFF
