"""Revision 087bdca35682 renames the outbox and a target's spec, keeping every row, both ways."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from bot.db import create_db_engine
from bot.migrate import alembic_config, upgrade
from tests.conftest import postgres_database

BEFORE = "cc42eadf25bb"
EMAIL = "dr.owen.jones.northgate-surgery@nhs-trust.example.org"
MESSAGE_ID = "<handover.prompt.123456.HO-7K2M9Q@handover.example.gov.uk>"
REVISION = "087bdca35682"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind, not yet migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    with postgres_database(f"handover_migrate_{os.getpid()}") as url:
        yield url


def run(url: str, *statements: str) -> list[tuple]:
    engine = create_db_engine(url)
    try:
        with engine.begin() as conn:
            rows: list[tuple] = []
            for statement in statements:
                result = conn.execute(text(statement))
                rows = [tuple(r) for r in result] if result.returns_rows else rows
            return rows
    finally:
        engine.dispose()


def shape(url: str) -> dict[str, set[str]]:
    engine = create_db_engine(url)
    try:
        inspector = inspect(engine)
        return {
            table: {c["name"] for c in inspector.get_columns(table)}
            for table in ("targets", "responses", *(t for t in ("prompts", "outbox")
                                                   if inspector.has_table(t)))
        }  # fmt: skip
    finally:
        engine.dispose()


def test_rows_survive_the_upgrade_and_the_downgrade(empty_url: str) -> None:
    upgrade(empty_url, BEFORE)
    run(
        empty_url,
        "INSERT INTO referrals VALUES ('HO-1', 'LCS-1', 'neglect', 'standard', '2026-11-14', "
        "'2026-11-14', 'edt-amy', '', 'api', 'h', 1, '{}', 'open', NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO targets (id, referral_id, position, target, planned_via, state) "
        "VALUES (1, 'HO-1', 0, 'person:hv-jo', 'self', 'prompted')",
        "INSERT INTO prompts (referral_id, target_id, kind, recipient_id, channel_id, due_at, "
        "state, attempts, late, message_channel, message_ts) VALUES ('HO-1', 1, 'prompt', "
        "'hv-jo', 'U0HVJO', '2026-11-16 09:00:00', 'sent', 0, false, 'D1', '1.000001')",
        "INSERT INTO responses (referral_id, target_id, prompt_id, kind, responder_id, at) "
        "SELECT 'HO-1', 1, id, 'acknowledged', 'hv-jo', '2026-11-16 09:30:00' FROM prompts",
    )
    [(prompt_id,)] = run(empty_url, "SELECT id FROM prompts")

    upgrade(empty_url, REVISION)
    assert "prompts" not in shape(empty_url)
    assert run(empty_url, "SELECT id, kind, address, channel, message_ts FROM outbox") == [
        (prompt_id, "prompt", "U0HVJO", None, "1.000001")
    ]
    assert run(empty_url, "SELECT spec FROM targets") == [("person:hv-jo",)]
    # The response still names its prompt's row, and new rows get fresh ids; an email address
    # and a Message-ID fit where Slack's IDs did.
    assert run(
        empty_url,
        "INSERT INTO outbox (referral_id, kind, due_at, state, attempts, late, channel, address, "
        f"message_channel, message_ts) VALUES ('HO-1', 'card', '2026-11-16 09:00:00', "
        f"'pending', 0, false, 'email', '{EMAIL}', '{EMAIL}', '{MESSAGE_ID}')",
        "SELECT r.prompt_id, o.kind FROM responses r JOIN outbox o ON o.id = r.prompt_id",
    ) == [(prompt_id, "prompt")]

    command.downgrade(alembic_config(empty_url), BEFORE)
    tables = shape(empty_url)
    assert "outbox" not in tables and "channel_id" in tables["prompts"]
    assert "target" in tables["targets"]
    assert run(empty_url, "SELECT id, kind, channel_id, message_ts FROM prompts ORDER BY id") == [
        (prompt_id, "prompt", "U0HVJO", "1.000001"),
        (prompt_id + 1, "card", EMAIL[:32], MESSAGE_ID[:32]),  # cut to fit, never refused
    ]
    assert run(empty_url, "SELECT prompt_id FROM responses") == [(prompt_id,)]

    upgrade(empty_url)  # and up again
    assert run(empty_url, "SELECT count(*) FROM outbox") == [(2,)]
