"""Who is on call now (`/handover oncall`): the on-call service on SQLite and PostgreSQL (no
HTTP)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from bot.services.oncall import on_call_now
from bot.settings import Settings
from rota.models import Shift
from tests.bot.services.conftest import SETTINGS
from tests.handlers.slack_payloads import EDT_CHANNEL, NOW, Scenario


def test_on_call_now(session_factory: sessionmaker[Session], scenario: Scenario) -> None:
    with session_factory() as session:
        answer = on_call_now(session, now=NOW, settings=SETTINGS)
        assert [role for role, _ in answer.roles] == ["edt_manager", "police_dau"]
        holders = dict(answer.roles)["edt_manager"]
        assert [(h.person_id, h.slack_user_id) for h in holders] == [("edt-mgr", "UEDTMGR")]
        assert holders[0].until == NOW + timedelta(hours=8)
        police = on_call_now(session, now=NOW, settings=SETTINGS, role="role:police_dau")
        assert [h.person_id for _, hs in police.roles for h in hs] == ["pc-jones"]
        assert on_call_now(session, now=NOW, settings=SETTINGS, role="nope").unknown_role == "nope"


def test_on_call_now_without_a_role_lists_every_role_on_shift(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory.begin() as session:
        session.add_all(
            [
                # On shift now: a role sorted between the two of the scenario.
                Shift(person_id="gp-mgr", role="hospital_safeguarding",
                      start_at=NOW - timedelta(hours=1), end_at=NOW + timedelta(hours=2)),
                Shift(person_id="pol-sgt", role="hospital_safeguarding",
                      start_at=NOW - timedelta(hours=3), end_at=NOW + timedelta(hours=1)),
                # Ended an hour ago, and starting in an hour: not on call now.
                Shift(person_id="hv-lead", role="night_nurse",
                      start_at=NOW - timedelta(hours=9), end_at=NOW - timedelta(hours=1)),
                Shift(person_id="hv-lead", role="ambulance_liaison",
                      start_at=NOW + timedelta(hours=1), end_at=NOW + timedelta(hours=9)),
            ]
        )  # fmt: skip
    police_first = Settings(edt_channel=EDT_CHANNEL, alert_roles=("police_dau", "paediatrician"))
    with session_factory() as session:
        answer = on_call_now(session, now=NOW, settings=police_first)
    assert [(role, [h.person_id for h in holders]) for role, holders in answer.roles] == [
        ("police_dau", ["pc-jones"]),
        ("paediatrician", []),  # an alert role nobody holds is still shown
        ("edt_manager", ["edt-mgr"]),
        ("hospital_safeguarding", ["pol-sgt", "gp-mgr"]),
    ]
