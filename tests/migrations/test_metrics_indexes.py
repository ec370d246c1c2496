"""Revision a7c3e9f1b2d4 gives rows sent before it their lateness, and goes back cleanly."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from bot.db import create_db_engine
from bot.migrate import alembic_config, upgrade
from tests.migrations.test_outbox_and_target_spec import empty_url, run

__all__ = ["empty_url"]

BEFORE = "de33a134eae9"
REVISION = "a7c3e9f1b2d4"


def test_sent_rows_get_their_lateness_and_the_downgrade_drops_it(empty_url: str) -> None:
    upgrade(empty_url, BEFORE)
    run(
        empty_url,
        "INSERT INTO referrals (referral_id, external_ref, category, urgency, referred_at, "
        "received_at, referrer_id, summary, source, request_hash, rota_version, plan_json, "
        "status) VALUES ('HO-MIGRAT', 'LCS-1', 'neglect', 'standard', '2026-12-29 09:00:00', "
        "'2026-12-29 09:00:00', 'edt-amy', '', 'api', 'h', 1, '{}', 'open')",
        "INSERT INTO outbox (referral_id, kind, due_at, state, attempts, late, sent_at) VALUES "
        "('HO-MIGRAT', 'prompt', '2026-12-29 09:00:00', 'sent', 1, false, "
        "'2026-12-29 09:00:02.500000'), "
        "('HO-MIGRAT', 'prompt', '2026-12-29 09:00:00', 'sent', 1, true, "
        "'2026-12-29 10:00:00'), "
        "('HO-MIGRAT', 'prompt', '2026-12-30 09:00:00', 'pending', 0, false, NULL)",
    )

    upgrade(empty_url, REVISION)

    assert run(empty_url, "SELECT state, lateness_ms FROM outbox ORDER BY id") == [
        ("sent", 2500),
        ("sent", 3_600_000),
        ("pending", None),
    ]
    command.downgrade(alembic_config(empty_url), BEFORE)
    engine = create_db_engine(empty_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("outbox")}
        indexes = {i["name"] for i in inspect(engine).get_indexes("outbox")}
    finally:
        engine.dispose()
    assert "lateness_ms" not in columns and "ix_outbox_metrics" not in indexes
    assert run(empty_url, "SELECT count(*) FROM outbox") == [(3,)]
