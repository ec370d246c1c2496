"""Revision b7e2d94c1a3f remembers the roles the stored shifts name, and goes back cleanly."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from bot.db import create_db_engine
from bot.migrate import alembic_config, upgrade
from tests.migrations.test_outbox_and_target_spec import empty_url, run

__all__ = ["empty_url"]

BEFORE = "5d2f8a61c0e4"
REVISION = "b7e2d94c1a3f"


def test_the_roles_of_the_stored_shifts_are_remembered_and_the_downgrade_drops_them(
    empty_url: str,
) -> None:
    upgrade(empty_url, BEFORE)
    run(
        empty_url,
        "INSERT INTO teams (team_id, name, agency, agency_type, region, hours, active) VALUES "
        "('police', 'Police', 'Police', 'police', 'england', 'none', true)",
        "INSERT INTO people (person_id, name, team_id, role, permissions, contact, active) "
        "VALUES ('pc-a', 'PC A', 'police', 'constable', '', 'slack', true)",
        "INSERT INTO shifts (person_id, role, start_at, end_at) VALUES "
        "('pc-a', 'police_dau', '2026-12-04 07:00:00', '2026-12-04 19:00:00'), "
        "('pc-a', 'police_dau', '2026-12-05 07:00:00', '2026-12-05 19:00:00'), "
        "('pc-a', 'edt_manager', '2026-12-06 07:00:00', '2026-12-06 19:00:00')",
    )

    upgrade(empty_url, REVISION)

    assert run(empty_url, "SELECT role FROM named_roles ORDER BY role") == [
        ("edt_manager",),
        ("police_dau",),
    ]
    command.downgrade(alembic_config(empty_url), BEFORE)
    engine = create_db_engine(empty_url)
    try:
        assert not inspect(engine).has_table("named_roles")
    finally:
        engine.dispose()
    assert run(empty_url, "SELECT count(*) FROM shifts") == [(3,)]
