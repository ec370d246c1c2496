"""The modal's role options: every role a shift names or once named (bot/services/directory)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.services.directory import search_roles
from rota.models import NamedRole
from tests.rota.factories import add_person, add_shift, add_team, local


def test_role_options_include_roles_whose_shifts_were_replaced(session: Session) -> None:
    add_team(session, "police", agency_type="police")
    add_person(session, "pc-a", "police")
    add_shift(session, "pc-a", "police_dau", local(2026, 12, 26, 7), local(2026, 12, 26, 19))
    add_shift(session, "pc-a", "police_dau", local(2026, 12, 27, 7), local(2026, 12, 27, 19))
    # police_cid's shifts went with last month's shifts.csv; it stays a role to choose.
    session.add_all([NamedRole(role="police_dau"), NamedRole(role="police_cid")])
    session.flush()

    assert search_roles(session, "") == [
        ("police_cid", "police_cid"),
        ("police_dau", "police_dau"),
    ]
    assert search_roles(session, "CID") == [("police_cid", "police_cid")]
